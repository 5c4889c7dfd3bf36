"""Each metric on hand-built cases with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from texter_jax.eval.metrics import (
    aligner_pullback,
    bootstrap_table,
    clip_scores,
    curve_auc,
    deletion_curve,
    directional_derivatives,
    feature_directions,
    hit_rates,
    insertion_curve,
    orthonormalize,
    rankdata,
    subset_masks,
)
from texter_jax.eval.metrics import bootstrap_ci as _bootstrap_ci
from texter_jax.eval.metrics import spearman as _spearman

# Run the costlier functions under jit, as the runner does.
bootstrap_ci = jax.jit(_bootstrap_ci, static_argnames=("n_boot", "level"))  # size traced
spearman = jax.jit(_spearman)

D, C = 6, 4


def _linear_head(seed=0):
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(size=(D, C)), jnp.float32)
    b = jnp.asarray(rng.normal(size=C), jnp.float32)
    return (lambda z: z @ w + b), w, b


def _mlp_head(seed=1):
    rng = np.random.default_rng(seed)
    w1 = jnp.asarray(rng.normal(size=(D, 8)) / np.sqrt(D), jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(8, C)), jnp.float32)
    return lambda z: jnp.tanh(z @ w1) @ w2


# -- CLIP score -------------------------------------------------------------------


def test_clip_score_identical_embeddings_is_one_and_masks_padding():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(3, 5)).astype(np.float32)
    t = np.stack([np.stack([2 * v[i], -v[i], rng.normal(size=5)]) for i in range(3)])
    mask = np.array([[1, 1, 0]] * 3, bool)
    top1, topk = clip_scores(jnp.asarray(v), jnp.asarray(t, jnp.float32), jnp.asarray(mask))
    np.testing.assert_allclose(top1, 1.0, atol=1e-6)  # scale does not matter
    np.testing.assert_allclose(topk, 0.0, atol=1e-6)  # (1 + -1) / 2, slot 3 masked
    top1, topk = clip_scores(jnp.asarray(v), jnp.asarray(t, jnp.float32),
                             jnp.zeros((3, 3), bool))
    assert np.isnan(top1).all() and np.isnan(topk).all()


# -- directions -------------------------------------------------------------------


def test_pinv_pullback_is_exact_preimage_and_ignores_bias():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, D)).astype(np.float32)  # E = 3 < D
    t = rng.normal(size=(2, 3)).astype(np.float32)
    p = aligner_pullback(w, "pinv")
    u = feature_directions(p, jnp.asarray(t))
    np.testing.assert_allclose(np.linalg.norm(u, axis=-1), 1.0, atol=1e-6)
    # W u is parallel to the normalised t: the aligned embedding moves exactly along t.
    wu = np.asarray(u) @ w.T
    cos = np.sum(wu * t, -1) / np.linalg.norm(wu, axis=-1) / np.linalg.norm(t, axis=-1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-5)
    # transpose: W^T t, normalised
    ut = feature_directions(aligner_pullback(w, "transpose"), jnp.asarray(t))
    ref = t @ w
    np.testing.assert_allclose(ut, ref / np.linalg.norm(ref, axis=-1, keepdims=True),
                               atol=1e-5)
    with pytest.raises(ValueError):
        aligner_pullback(w, "inverse")


def test_centering_removes_shared_component():
    p = aligner_pullback(np.eye(3, dtype=np.float32))
    t = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    tn = t / jnp.linalg.norm(t, axis=-1, keepdims=True)
    u = feature_directions(p, t, center=tn.mean(0))
    np.testing.assert_allclose(u, [[0, 1 / np.sqrt(2), -1 / np.sqrt(2)],
                                   [0, -1 / np.sqrt(2), 1 / np.sqrt(2)]], atol=1e-6)


# -- directional derivative -------------------------------------------------------


def test_gradient_direction_gives_the_maximal_derivative():
    head = _mlp_head()
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(2, D)), jnp.float32)
    cls = jnp.array([1, 3])
    grad = jax.vmap(jax.grad(lambda zz, c: head(zz[None])[0, c]))(z, cls)
    dirs = np.concatenate([np.asarray(grad)[:, None], rng.normal(size=(2, 200, D))], axis=1)
    deriv, cos = directional_derivatives(head, z, cls, jnp.asarray(dirs, jnp.float32))
    gnorm = np.linalg.norm(grad, axis=-1)
    np.testing.assert_allclose(deriv[:, 0], gnorm, rtol=1e-5)
    np.testing.assert_allclose(cos[:, 0], 1.0, atol=1e-6)
    assert (np.asarray(deriv[:, 1:]) <= gnorm[:, None] + 1e-5).all()
    assert np.asarray(deriv[:, 1:]).max() < gnorm.max()
    # matches a central finite difference along a random unit direction
    u = dirs[:, 5] / np.linalg.norm(dirs[:, 5], axis=-1, keepdims=True)
    eps = 1e-3
    def f(x):
        return np.take_along_axis(np.asarray(head(jnp.asarray(x, jnp.float32))),
                                  np.asarray(cls)[:, None], 1)[:, 0]
    fd = (f(np.asarray(z) + eps * u) - f(np.asarray(z) - eps * u)) / (2 * eps)
    np.testing.assert_allclose(deriv[:, 5], fd, atol=2e-3)


# -- insertion / deletion ---------------------------------------------------------


def test_orthonormalize_spans_in_order_and_drops_dependent_directions():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(D, D))
    dirs = np.stack([a[0], a[1], a[0] + 2 * a[1], a[2]])[None].astype(np.float32)
    q, kept = orthonormalize(jnp.asarray(dirs))
    assert kept.tolist() == [[True, True, False, True]]
    q = np.asarray(q[0])
    np.testing.assert_allclose(q[2], 0.0)
    live = q[[0, 1, 3]]
    np.testing.assert_allclose(live @ live.T, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(q[0], a[0] / np.linalg.norm(a[0]), atol=1e-5)


def test_full_basis_insertion_recovers_image_and_deletion_gives_bias():
    head, w, b = _linear_head()
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(3, D)), jnp.float32)
    cls = jnp.array([0, 2, 3])
    # a full but non-orthogonal basis, in a different order per image
    basis = jnp.asarray(rng.normal(size=(3, D, D)), jnp.float32)
    ins = insertion_curve(head, z, cls, basis, output="logit")
    dele = deletion_curve(head, z, cls, basis, output="logit")
    want_img = np.take_along_axis(np.asarray(head(z)), np.asarray(cls)[:, None], 1)[:, 0]
    np.testing.assert_allclose(ins[:, -1], want_img, atol=1e-4)
    np.testing.assert_allclose(dele[:, 0], want_img, atol=1e-5)
    np.testing.assert_allclose(dele[:, -1], np.asarray(b)[np.asarray(cls)], atol=1e-4)
    np.testing.assert_allclose(ins[:, 0], np.asarray(b)[np.asarray(cls)], atol=1e-6)
    # probabilities: softmax of those logits; insertion + deletion points sum to z
    p_ins = insertion_curve(head, z, cls, basis)
    want_p = np.take_along_axis(np.asarray(jax.nn.softmax(head(z))),
                                np.asarray(cls)[:, None], 1)[:, 0]
    np.testing.assert_allclose(p_ins[:, -1], want_p, atol=1e-5)


def test_mean_baseline_and_masked_slots():
    head, w, b = _linear_head()
    rng = np.random.default_rng(2)
    z = jnp.asarray(rng.normal(size=(1, D)), jnp.float32)
    z0 = jnp.asarray(rng.normal(size=D), jnp.float32)
    dirs = jnp.asarray(rng.normal(size=(1, 3, D)), jnp.float32)
    ins = insertion_curve(head, z, jnp.array([1]), dirs, z0, output="logit")
    np.testing.assert_allclose(ins[0, 0], (z0 @ w + b)[1], atol=1e-5)
    # a masked slot changes nothing: the curve stays flat at that step
    mask = jnp.array([[True, False, True]])
    dele = deletion_curve(head, z, jnp.array([1]), dirs, z0, mask)
    np.testing.assert_allclose(dele[0, 1], dele[0, 2], atol=1e-7)
    assert not np.isclose(dele[0, 2], dele[0, 3])


def test_curve_auc_trapezoid():
    np.testing.assert_allclose(curve_auc(jnp.array([[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])),
                               [1.0, 0.25])


# -- rank correlation -------------------------------------------------------------


def test_spearman_identical_reversed_and_scipy_with_ties_and_mask():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 30)), jnp.float32)
    np.testing.assert_allclose(spearman(x, x), [1.0], atol=1e-6)
    np.testing.assert_allclose(spearman(x, -x), [-1.0], atol=1e-6)
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, size=(3, 20)).astype(np.float32)  # many ties
    b = (a + rng.integers(0, 3, size=a.shape)).astype(np.float32)
    mask = np.ones(a.shape, bool)
    mask[1, 15:] = False
    mask[2, 7:] = False
    rho = np.asarray(spearman(jnp.asarray(a), jnp.asarray(b), jnp.asarray(mask)))
    for i in range(3):
        want = stats.spearmanr(a[i][mask[i]], b[i][mask[i]]).statistic
        np.testing.assert_allclose(rho[i], want, atol=1e-5)
    np.testing.assert_allclose(rankdata(jnp.asarray(a[:1]))[0],
                               stats.rankdata(a[0]), atol=1e-6)
    assert np.isnan(spearman(jnp.ones((1, 4)), x[:, :4])).all()  # constant scoring


# -- bootstrap --------------------------------------------------------------------


def test_bootstrap_ci_contains_mean_shrinks_with_n_and_is_reproducible():
    rng = np.random.default_rng(0)
    key = jax.random.key(3)
    small = rng.normal(1.0, 1.0, 20)
    large = rng.normal(1.0, 1.0, 2000)
    m_s, lo_s, hi_s = bootstrap_ci(key, small, n_boot=1000)
    m_l, lo_l, hi_l = bootstrap_ci(key, large, n_boot=1000)
    assert lo_s <= m_s <= hi_s and lo_l <= m_l <= hi_l
    np.testing.assert_allclose(m_s, small.mean(), rtol=1e-5)
    assert (hi_l - lo_l) < 0.3 * (hi_s - lo_s)  # ~ 1/sqrt(n): 10x more data, ~3x narrower
    again = bootstrap_ci(key, small, n_boot=1000)
    assert [float(x) for x in again] == [float(m_s), float(lo_s), float(hi_s)]
    # batched over metrics with NaN = missing
    vals = np.stack([small, np.where(np.arange(20) < 10, small, np.nan)])
    m, lo, hi = bootstrap_ci(key, vals, n_boot=500)
    np.testing.assert_allclose(m, [small.mean(), small[:10].mean()], rtol=1e-5)
    assert (lo <= m).all() and (m <= hi).all()
    table = bootstrap_table({"a": small, "b": np.full(20, np.nan)}, seed=0, n_boot=200)
    assert table["a"][0] == 20 and table["b"][0] == 0 and np.isnan(table["b"][1])


# -- subsets and hits -------------------------------------------------------------


def test_subsets_and_hits():
    masks = subset_masks([0, 1, 1], [0, 0, 1])
    assert masks["misclassified"].tolist() == [False, True, False]
    meaning = {"red": ("colour", "red"), "grass background": ("background", "grass"),
               "star shape": ("shape", "star")}
    r = hit_rates([["red", "grass background"], ["star shape", "red"]],
                  [(("background", "grass"),), (("shape", "star"), ("colour", "red"))],
                  meaning, [1, 2])
    assert r["hit@1"].tolist() == [False, True] and r["hit@2"].tolist() == [True, True]


def test_bootstrap_padding_with_size_equals_unpadded():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 13)).astype(np.float32)
    padded = np.concatenate([x, rng.normal(size=(2, 19)).astype(np.float32)], axis=1)
    m, lo, hi = bootstrap_ci(jax.random.key(0), padded, n_boot=400, size=13)
    np.testing.assert_allclose(m, x.mean(1), rtol=1e-5)
    assert (lo <= m).all() and (m <= hi).all()
    # same resample distribution as unpadded, up to the different random draws
    m2, lo2, hi2 = bootstrap_ci(jax.random.key(1), x, n_boot=400)
    np.testing.assert_allclose(hi - lo, hi2 - lo2, rtol=0.35)


# The >>> examples of every metric module run as doctests in tests/test_docs_examples.py.
