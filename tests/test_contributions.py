"""Integrated gradients and unit selection: closed forms and completeness."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from texter_jax.contributions import METHODS, ig_features, ig_sae_codes, quadrature, top_units
from texter_jax.sae import SaeConfig, init_sae, sae_decode, sae_encode


def _mlp_head(params, z):
    h = jnp.tanh(z @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def _mlp(key, d=12, h=16, c=5):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"w1": jax.random.normal(k1, (d, h)) / np.sqrt(d), "b1": jnp.zeros(h) + 0.1,
            "w2": jax.random.normal(k2, (h, c)), "b2": jax.random.normal(k3, (c,))}


@pytest.mark.parametrize("method", METHODS)
def test_quadrature_nodes_in_unit_interval(method):
    a, w = quadrature(method, 10)
    assert a.shape == w.shape == (10,) and (a >= 0).all() and (a <= 1).all()
    target = 1 - 1 / 10 if method == "riemann_trapezoid" else 1.0  # captum's trapezoid
    assert w.sum() == pytest.approx(target)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_right"])
def test_linear_head_is_exact(method):
    w = jax.random.normal(jax.random.key(0), (7, 4))
    b = jnp.arange(4.0)
    z = jax.random.normal(jax.random.key(1), (3, 7))
    cls = jnp.array([0, 3, 1])
    s = ig_features(lambda x: x @ w + b, z, cls, steps=3, method=method)
    np.testing.assert_allclose(s, z * w[:, cls].T, rtol=1e-5, atol=1e-6)


def test_completeness_improves_with_steps_and_gl_is_tight():
    p = _mlp(jax.random.key(2))
    head = functools.partial(_mlp_head, p)
    z = 2 * jax.random.normal(jax.random.key(3), (4, 12))
    cls = jnp.array([0, 1, 2, 4])
    gap = head(z)[jnp.arange(4), cls] - head(jnp.zeros_like(z))[:, cls].diagonal()
    def err(steps, method):
        s = ig_features(head, z, cls, steps=steps, method=method)
        return float(jnp.abs(s.sum(-1) - gap).max())

    rr = [err(s, "riemann_right") for s in (10, 40, 160)]
    # first-order rule: the error shrinks about 4x per 4x more steps
    assert rr[0] > 2.5 * rr[1] > 6 * rr[2] and rr[2] < 0.01 * float(jnp.abs(gap).max())
    assert err(100, "gausslegendre") < 1e-4  # spectral convergence on a smooth head


def test_chunking_does_not_change_the_result():
    p = _mlp(jax.random.key(4))
    head = functools.partial(_mlp_head, p)
    z = jax.random.normal(jax.random.key(5), (3, 12))
    cls = jnp.array([1, 1, 0])
    ref = ig_features(head, z, cls, steps=100, chunk=100)
    for chunk in (1, 7, 33):
        np.testing.assert_allclose(ig_features(head, z, cls, steps=100, chunk=chunk), ref,
                                   rtol=1e-5, atol=1e-6)


def test_sae_codes_release_size_fits_and_completes():
    # n = 16384 codes, M = 100, B = 8, the release's sizes for ResNet-50 (d reduced).
    cfg = SaeConfig(64, 16384, 1638)
    sp = init_sae(jax.random.key(6), cfg)
    w = jax.random.normal(jax.random.key(7), (64, 10)) / 8
    head = lambda f: jnp.tanh(f @ w)  # noqa: E731  (nonlinear on purpose)
    x = jnp.abs(jax.random.normal(jax.random.key(8), (8, 64)))
    _, codes = sae_encode(sp, x, cfg.top_k)
    cls = jnp.arange(8) % 10
    run = jax.jit(ig_sae_codes, static_argnums=0, static_argnames=("steps", "method", "chunk"))
    s = run(head, sp, codes, cls, steps=100)
    assert s.shape == (8, 16384)
    assert (np.asarray(s)[np.asarray(codes) == 0] == 0).all()
    f = lambda c: head(sae_decode(sp, c))[jnp.arange(8), cls]  # noqa: E731
    np.testing.assert_allclose(s.sum(-1), f(codes) - f(jnp.zeros_like(codes)), atol=1e-4)


def test_top_units_abs_among_active():
    s = jnp.array([[0.5, -3.0, 2.0, 10.0, -0.1, 0.0]])
    active = jnp.array([[True, True, True, False, True, False]])
    idx, val = top_units(s, k=3, active=active)
    np.testing.assert_array_equal(idx, [[1, 2, 0]])
    np.testing.assert_allclose(val, [[-3.0, 2.0, 0.5]])
    idx, _ = top_units(s, k=2)
    np.testing.assert_array_equal(idx, [[3, 1]])
    idx, _ = top_units(s, k=2, by="signed")
    np.testing.assert_array_equal(idx, [[3, 2]])
    # ties keep index order, like the release's stable sort
    idx, _ = top_units(jnp.array([[1.0, -1.0, 1.0]]), k=3)
    np.testing.assert_array_equal(idx, [[0, 1, 2]])
    # fewer active units than k: -1 / 0 padding
    idx, val = top_units(s, k=6, active=active)
    np.testing.assert_array_equal(idx, [[1, 2, 0, 4, -1, -1]])
    assert float(val[0, -1]) == 0.0
