"""Linear aligner: closed form vs the release SGD recipe, optimiser equivalence, I/O."""

import jax
import numpy as np
import pytest

from texter_jax.aligner import load as load_aligner
from texter_jax.aligner import save as save_aligner
from texter_jax.io.checkpoints import CheckpointError
from texter_jax.train.aligner import (
    aligner_zero_shot_accuracy,
    fit_aligner,
    pooled_variance,
    sgd_optimizer,
)


def _linear_data(n=6000, d=32, e=8, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = (rng.normal(size=(e, d)) / np.sqrt(d)).astype(np.float32)
    b = (0.5 * rng.normal(size=e)).astype(np.float32)
    y = x @ w.T + b + noise * rng.normal(size=(n, e)).astype(np.float32)
    return x, y, w, b


def test_closed_form_and_sgd_agree_on_linear_data():
    x, y, w, b = _linear_data()
    cf = fit_aligner(x, y, key=jax.random.key(0), method="closed_form")
    sgd = fit_aligner(x, y, key=jax.random.key(0), method="sgd")  # release recipe
    assert cf.method == "closed_form" and sgd.method == "sgd"
    for r in (cf, sgd):
        assert r.metrics["holdout_r2"] > 0.99, r.metrics
        assert r.metrics["n_holdout"] == 600
    np.testing.assert_allclose(cf.w, w, atol=2e-3)
    np.testing.assert_allclose(cf.b, b, atol=2e-3)
    np.testing.assert_allclose(sgd.w, cf.w, atol=5e-3)
    np.testing.assert_allclose(sgd.b, cf.b, atol=1e-2)
    assert len(sgd.metrics["epoch_loss"]) == 6
    assert sgd.metrics["epoch_loss"][-1] < sgd.metrics["epoch_loss"][0]


def test_auto_picks_closed_form_unless_too_big():
    x, y, _, _ = _linear_data(n=300, d=8, e=4)
    assert fit_aligner(x, y, key=jax.random.key(0)).method == "closed_form"
    r = fit_aligner(x, y, key=jax.random.key(0), closed_form_max_bytes=10, epochs=1)
    assert r.method == "sgd"


def test_pooled_variance_is_the_release_definition():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert pooled_variance(x) == pytest.approx(float(np.var(x)))


def test_sgd_optimizer_matches_torch_sgd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(3, 5)).astype(np.float32)
    grads = [rng.normal(size=(3, 5)).astype(np.float32) for _ in range(4)]
    lrs = [0.01, 0.008, 0.005, 0.002]
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt = torch.optim.SGD([p], lr=lrs[0], momentum=0.9, weight_decay=5e-4)
    for g, lr in zip(grads, lrs, strict=True):
        opt.param_groups[0]["lr"] = lr
        p.grad = torch.from_numpy(g)
        opt.step()
    tx = sgd_optimizer(lambda count: np.asarray(lrs)[count], momentum=0.9, weight_decay=5e-4)
    params = jax.numpy.asarray(w0)
    state = tx.init(params)
    for g in grads:
        upd, state = tx.update(jax.numpy.asarray(g), state, params)
        params = params + upd
    np.testing.assert_allclose(np.asarray(params), p.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_zero_shot_accuracy_through_aligner():
    rng = np.random.default_rng(2)
    text = rng.normal(size=(5, 8)).astype(np.float32)
    labels = rng.integers(0, 5, size=50)
    w = np.eye(8, dtype=np.float32)
    feats = text[labels] * 3.0 + 0.01 * rng.normal(size=(50, 8)).astype(np.float32)
    assert aligner_zero_shot_accuracy(w, np.zeros(8), feats, labels, text) == 1.0
    assert aligner_zero_shot_accuracy(w, np.zeros(8), feats, (labels + 1) % 5, text) == 0.0


def test_save_load_roundtrip_and_foreign_folder(tmp_path):
    x, y, _, _ = _linear_data(n=200, d=6, e=3)
    r = fit_aligner(x, y, key=jax.random.key(0), method="closed_form")
    save_aligner(tmp_path / "al", r)
    back = load_aligner(tmp_path / "al")
    np.testing.assert_array_equal(back.w, r.w)
    np.testing.assert_array_equal(back.b, r.b)
    assert back.method == "closed_form"
    with pytest.raises(FileExistsError):
        save_aligner(tmp_path / "al", r)
    (tmp_path / "foreign").mkdir()
    with pytest.raises(CheckpointError, match="foreign"):
        load_aligner(tmp_path / "foreign")
