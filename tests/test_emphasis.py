"""Stage 2 (MACO emphasis): parameterisation, crops, NAdam, loop, batch, objectives
(templates: test_spectrum.py).

Tiny shapes throughout (canvas 64, crops of 32, a two-layer Flax classifier) so the
file runs in well under a minute on 2 CPU cores. One MacoConfig is shared so the
compiled loop is reused across tests.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from texter_jax.classifier import Classifier
from texter_jax.emphasis import (
    MacoConfig,
    add_noise,
    crop_and_resize,
    features_objective,
    init_phase,
    maco,
    maco_batch,
    maco_batch_with_retry,
    phase_to_image,
    power_law_spectrum,
    random_crops,
    sae_objective,
    sample_boxes,
    torch_nadam,
    with_units,
)
from texter_jax.emphasis.param import COLOR_CORRELATION_SQRT, spectrum_shape
from texter_jax.emphasis.render import _maco_jit

CANVAS, CROP = 64, 32
CFG = MacoConfig(canvas=CANVAS, steps=24, n_crops=3, crop_size=CROP)


class _Tiny(nn.Module):
    dim: int = 8

    def setup(self):
        self.conv = nn.Conv(self.dim, (3, 3), strides=(2, 2))
        self.cls = nn.Dense(3)

    def features(self, x):
        return jnp.mean(nn.relu(self.conv(x)), axis=(1, 2))

    def head(self, z):
        return self.cls(z)

    def __call__(self, x):
        z = self.features(x)
        return self.head(z), {"features": z}


@pytest.fixture(scope="module")
def tiny():
    clf = Classifier("tiny", _Tiny(), None, image_size=CROP, feature_dim=8, num_classes=3)
    variables = clf.module.init(jax.random.key(0), *clf.dummy_inputs())
    return clf, variables


@pytest.fixture(scope="module")
def magnitude():
    return jnp.asarray(power_law_spectrum(CANVAS))


# ---------------------------------------------------------------- spectrum


def _np_phase_to_image(phase, mag):
    """Independent numpy rendering of the release's preconditioner order."""
    def std(x):
        x = x - x.mean()
        return x / (x.std(ddof=1) + 1e-4)

    p = std(phase.astype(np.float64))
    sp = np.fft.irfft2(mag * np.exp(1j * p), s=phase.shape[1:2] * 2, axes=(-2, -1))
    rgb = np.moveaxis(std(sp), 0, -1) @ COLOR_CORRELATION_SQRT.astype(np.float64)
    return 1 / (1 + np.exp(-rgb))


def test_phase_to_image_matches_numpy_and_range():
    s = 16
    phase = init_phase(jax.random.key(3), s)
    assert phase.shape == spectrum_shape(s)
    mag = power_law_spectrum(s, decay=0.5)
    img = jax.jit(phase_to_image)(phase, mag)
    assert img.shape == (s, s, 3) and img.dtype == jnp.float32
    np.testing.assert_allclose(img, _np_phase_to_image(np.asarray(phase), mag), atol=2e-5)
    assert float(img.min()) >= 0 and float(img.max()) <= 1


def test_phase_gradients_finite_difference():
    s = 8
    mag = jnp.asarray(power_law_spectrum(s))
    phase = init_phase(jax.random.key(1), s)
    weights = jax.random.normal(jax.random.key(2), (s, s, 3))
    f = jax.jit(lambda p: jnp.sum(weights * phase_to_image(p, mag)))
    g = jax.jit(jax.grad(f))(phase)
    d = jax.random.normal(jax.random.key(4), phase.shape)
    eps = 1e-2
    fd = (f(phase + eps * d) - f(phase - eps * d)) / (2 * eps)
    assert float(jnp.vdot(g, d)) == pytest.approx(float(fd), rel=2e-2)


# ---------------------------------------------------------------- crops


def test_whole_canvas_box_equals_plain_resize():
    img = jax.random.uniform(jax.random.key(0), (CANVAS, CANVAS, 3))
    box = jnp.array([[0.5, 0.5, 1.0]])
    ref = jax.image.resize(img, (CROP, CROP, 3), "linear", antialias=True)
    np.testing.assert_allclose(crop_and_resize(img, box, CROP)[0], ref, atol=1e-6)
    np.testing.assert_allclose(crop_and_resize(img, box, CROP, max_side=1.0)[0], ref, atol=1e-6)


def test_windowed_crops_match_scale_and_translate():
    img = jax.random.uniform(jax.random.key(0), (CANVAS, CANVAS, 3))
    # wide centre spread so several boxes overhang the canvas edge
    boxes = sample_boxes(jax.random.key(1), 24, centre_std=0.3, side_range=(0.2, 0.45))

    def ref(b):
        size = b[2] * CANVAS
        scale = CROP / size
        t = -jnp.array([b[0], b[1]]) * CANVAS * scale + 0.5 * size * scale
        return jax.image.scale_and_translate(img, (CROP, CROP, 3), (0, 1),
                                             jnp.array([scale, scale]), t, "linear")

    got = jax.jit(lambda i, b: crop_and_resize(i, b, CROP, max_side=0.45))(img, boxes)
    np.testing.assert_allclose(got, jax.vmap(ref)(boxes), atol=5e-5)


def test_crops_are_differentiable_wrt_image():
    img = jax.random.uniform(jax.random.key(0), (CANVAS, CANVAS, 3))
    w = jax.random.normal(jax.random.key(5), (4, CROP, CROP, 3))
    f = jax.jit(lambda i: jnp.sum(w * random_crops(jax.random.key(6), i, 4, CROP)))
    g = jax.jit(jax.grad(f))(img)
    assert float(jnp.abs(g).sum()) > 0
    d = jax.random.normal(jax.random.key(7), img.shape)
    # linear in the image (noise is additive): directional derivative is exact
    assert float(jnp.vdot(g, d)) == pytest.approx(float(f(img + d) - f(img)), rel=1e-3)


def test_box_and_noise_statistics():
    b = np.asarray(sample_boxes(jax.random.key(0), 20000))
    assert b[:, 2].min() >= 0.25 and b[:, 2].max() <= 0.30
    assert abs(b[:, :2].mean() - 0.5) < 0.01 and abs(b[:, :2].std() - 0.15) < 0.01
    c = np.asarray(sample_boxes(jax.random.key(0), 2000, centre_std=0.5, clip=True))
    assert (c[:, :2] - c[:, 2:] / 2).min() >= 0 and (c[:, :2] + c[:, 2:] / 2).max() <= 1 + 1e-6
    n = np.asarray(add_noise(jax.random.key(1), jnp.zeros((200000,)), 0.05))
    assert abs(n.mean()) < 1e-3
    assert n.std() == pytest.approx(np.sqrt(0.05**2 + 0.05**2 / 12), rel=0.02)


# ---------------------------------------------------------------- nadam


def test_nadam_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(5, 7)).astype(np.float32)
    grads = [rng.normal(size=p0.shape).astype(np.float32) * 10.0 ** -k for k in range(6)]
    tp = torch.tensor(p0, requires_grad=True)
    topt = torch.optim.NAdam([tp], lr=1.0)
    opt = torch_nadam(1.0)
    p, state = jnp.asarray(p0), opt.init(jnp.asarray(p0))
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
        upd, state = opt.update(jnp.asarray(g), state, p)
        p = p + upd
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- loop


def test_maco_rises_is_deterministic_and_in_range(tiny, magnitude):
    clf, variables = tiny
    obj = with_units(features_objective(clf, variables), [1, 4, 0], [True, True, False])
    r1 = maco(obj, jax.random.key(0), magnitude, CFG)
    assert r1.image.shape == r1.transparency.shape == (CANVAS, CANVAS, 3)
    assert r1.objective_trace.shape == (CFG.steps,)
    assert float(r1.image.min()) >= 0 and float(r1.image.max()) <= 1
    assert float(r1.transparency.min()) >= 0 and float(r1.transparency.max()) > 0
    tr = np.asarray(r1.objective_trace)
    assert tr[-4:].mean() > tr[:4].mean()
    # a rebuilt objective hits the same compiled loop; the same key is bitwise equal
    before = _maco_jit._cache_size()
    r2 = maco(with_units(features_objective(clf, variables), [1, 4, 0], [True, True, False]),
              jax.random.key(0),
              magnitude, CFG)
    assert _maco_jit._cache_size() == before
    for a, b in zip(r1, r2, strict=True):
        np.testing.assert_array_equal(a, b)
    r3 = maco(obj, jax.random.key(1), magnitude, CFG)
    assert not np.array_equal(r1.image, r3.image)


def test_batch_equals_single_runs(tiny, magnitude):
    clf, variables = tiny
    cfg = CFG  # shares the single-image compile with the test above
    obj = features_objective(clf, variables)
    keys = jax.random.split(jax.random.key(9), 2)
    ids = jnp.array([[0, 3, 5], [2, 7, 0]])
    mask = jnp.array([[True, True, True], [True, True, False]])
    seen = []  # the loop reports each window once, not per image
    batch = maco_batch(obj, keys, magnitude, cfg, ids, mask, progress=seen.append,
                       progress_every=5)
    assert seen == [5, 10, 15, 20, 24]  # ceil(24 / 5) reports, the last at the end
    assert batch.image.shape == (2, CANVAS, CANVAS, 3)
    for b in range(2):
        single = maco(with_units(obj, ids[b], mask[b]), keys[b], magnitude, cfg)
        np.testing.assert_allclose(batch.objective_trace[b], single.objective_trace, rtol=1e-4)
        np.testing.assert_allclose(batch.image[b], single.image, atol=1e-4)
        np.testing.assert_allclose(batch.transparency[b], single.transparency,
                                   rtol=1e-3, atol=1e-3 * float(single.transparency.max()))


def _gated(crops, unit_ids, unit_mask):
    # unit 0 is "dead" (zero gradient everywhere), unit 1 responds to brightness
    table = jnp.stack([0.0 * jnp.sum(crops), jnp.mean(crops), jnp.mean(crops[..., 0])])
    return jnp.sum(jnp.where(unit_mask, table[unit_ids], 0.0))


def test_convergence_stop(tiny, magnitude):
    """The fast preset's rule: windows of 4 steps, at least 8; an image whose objective
    stops rising stops there (NaN after), the others run on; states match single runs."""
    clf, variables = tiny
    obj = with_units(features_objective(clf, variables), [1, 4, 0], [True, True, False])
    key = jax.random.key(0)
    full = maco(obj, key, magnitude, CFG)
    # tolerance huge: stops after the first window the rule may look at (8 steps)
    early = maco(obj, key, magnitude, dataclasses.replace(
        CFG, stop_rtol=1e9, stop_window=4, stop_min_steps=8))
    tr = np.asarray(early.objective_trace)
    assert tr.shape == (CFG.steps,) and np.isnan(tr[8:]).all() and not np.isnan(tr[:8]).any()
    np.testing.assert_allclose(tr[:8], np.asarray(full.objective_trace)[:8], rtol=1e-5)
    short = maco(obj, key, magnitude, dataclasses.replace(CFG, steps=8))
    np.testing.assert_allclose(early.image, short.image, atol=1e-5)
    np.testing.assert_allclose(early.transparency, short.transparency, rtol=1e-4, atol=1e-6)
    from texter_jax.emphasis import final_objective
    assert float(final_objective(early.objective_trace)) == pytest.approx(float(tr[7]))
    # the minimum at the full length: the rule never fires, the release's run
    never = maco(obj, key, magnitude, dataclasses.replace(
        CFG, stop_rtol=1e9, stop_window=4, stop_min_steps=CFG.steps))
    np.testing.assert_allclose(never.objective_trace, full.objective_trace, rtol=1e-5)
    np.testing.assert_allclose(never.image, full.image, atol=1e-5)

    # batched: a dead unit (score 0 throughout) stops at 8; a live one is unaffected
    cfg = dataclasses.replace(CFG, stop_rtol=0.0, stop_window=4, stop_min_steps=8)
    keys = jax.random.split(jax.random.key(3), 2)
    ids, mask = jnp.array([[0], [1]]), jnp.array([[True], [True]])
    seen = []  # each window once, though the loop index is batched
    batch = maco_batch(_gated, keys, magnitude, cfg, ids, mask, progress=seen.append)
    steps_run = int(np.sum(~np.isnan(np.asarray(batch.objective_trace[1]))))
    assert seen == list(range(4, steps_run + 1, 4))
    assert np.isnan(np.asarray(batch.objective_trace[0, 8:])).all()
    for b in range(2):
        single = maco(with_units(_gated, ids[b], mask[b]), keys[b], magnitude, cfg)
        np.testing.assert_allclose(batch.objective_trace[b], single.objective_trace,
                                   rtol=1e-4)
        np.testing.assert_allclose(batch.image[b], single.image, atol=1e-4)
    with pytest.raises(ValueError, match="multiple of stop_window"):
        MacoConfig(steps=30, stop_rtol=0.01, stop_window=32)


def test_retry_adds_a_unit_when_transparency_is_zero(magnitude):
    cfg = dataclasses.replace(CFG, steps=4)
    keys = jax.random.split(jax.random.key(2), 2)
    ranked = np.array([[0, 1, 2], [1, 2, 0]])
    result, info = maco_batch_with_retry(_gated, keys, magnitude, cfg, ranked, 1)
    assert info.n_units.tolist() == [2, 1] and info.retries.tolist() == [1, 0]
    assert not info.failed.any()
    assert float(result.transparency[0].max()) > 0
    plain = maco_batch(_gated, keys, magnitude, cfg, ranked, np.array([[1, 0, 0], [1, 0, 0]], bool))
    np.testing.assert_array_equal(result.image[1], plain.image[1])
    assert float(plain.transparency[0].max()) == 0.0


# ---------------------------------------------------------------- objectives


def test_feature_and_sae_objectives(tiny):
    from texter_jax.sae import SaeConfig, init_sae, sae_encode

    clf, variables = tiny
    crops = jax.random.uniform(jax.random.key(0), (3, CROP, CROP, 3))
    ids, mask = jnp.array([1, 4, 6]), jnp.array([True, False, True])
    z = clf.features(variables, crops)
    want = float(z[:, 1].mean() + z[:, 6].mean())
    obj = features_objective(clf, variables)
    assert float(obj(crops, ids, mask)) == pytest.approx(want, rel=1e-5)
    low = features_objective(clf, variables, compute_dtype=jnp.bfloat16)(crops, ids, mask)
    assert low.dtype == jnp.float32 and float(low) == pytest.approx(want, rel=3e-2)
    sae = init_sae(jax.random.key(1), SaeConfig(8, 32, 4))
    codes = sae_encode(sae, z, 4)[1]
    sobj = sae_objective(clf, variables, None, sae, top_k=4)
    assert float(sobj(crops, ids, None)) == pytest.approx(
        float(codes[:, 1].mean() + codes[:, 4].mean() + codes[:, 6].mean()), rel=1e-5)


# ---------------------------------------------------------------- CLI


@pytest.mark.parametrize("size", [64, 45])
def test_dense_dft_equals_the_fft(size):
    """TPU's form of the inverse FFT (dense DFT products at HIGHEST precision) against
    jnp.fft and numpy float64, even and odd canvases."""
    from texter_jax.emphasis.dft import irfft2, irfft2_dense, irfft2_fft

    rng = np.random.default_rng(size)
    re, im = (rng.normal(size=(3, size, size // 2 + 1)).astype(np.float32) for _ in range(2))
    ref = np.fft.irfft2(re.astype(np.float64) + 1j * im, s=(size, size))
    dense = np.asarray(jax.jit(irfft2_dense)(re, im))
    np.testing.assert_allclose(dense, ref, atol=2e-6 * np.abs(ref).max())
    np.testing.assert_allclose(np.asarray(irfft2_fft(re, im)), ref, atol=2e-6 * np.abs(ref).max())
    # here (CPU) the backend's choice is the FFT
    np.testing.assert_array_equal(np.asarray(jax.jit(irfft2)(re, im)),
                                  np.asarray(jax.jit(irfft2_fft)(re, im)))
