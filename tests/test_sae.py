"""Properties of the pure-JAX TopK SAE (no torch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from texter_jax.sae import (
    SaeConfig,
    init_sae,
    normalized_dictionary,
    project_dictionary,
    sae_apply,
    sae_decode,
    sae_encode,
    topk_mask,
)


def test_release_default_sizes():
    c = SaeConfig.release_default(2048)
    assert (c.input_dim, c.nb_concepts, c.top_k) == (2048, 16384, 1638)
    with pytest.raises(ValueError):
        SaeConfig(4, 8, 9)


def test_shapes_sparsity_and_unit_rows():
    c = SaeConfig(16, 128, 12)
    p = init_sae(jax.random.key(0), c)
    assert p["encoder"]["kernel"].shape == (16, 128)
    assert p["dictionary"]["weights"].shape == (128, 16)
    x = jax.random.normal(jax.random.key(1), (5, 16))
    pre, codes, xhat = jax.jit(sae_apply, static_argnums=2)(p, x, c.top_k)
    assert pre.shape == codes.shape == (5, 128) and xhat.shape == (5, 16)
    nz = np.count_nonzero(np.asarray(codes), axis=-1)
    assert (nz <= 12).all() and (np.asarray(codes) >= 0).all()
    # kept codes are the 12 largest ReLU(pre) values of each row
    ref = np.sort(np.maximum(np.asarray(pre), 0), axis=-1)[:, -12:]
    np.testing.assert_allclose(np.sort(np.asarray(codes), axis=-1)[:, -12:], ref)
    np.testing.assert_allclose(np.linalg.norm(normalized_dictionary(p), axis=-1), 1, atol=1e-6)
    np.testing.assert_allclose(xhat, codes @ normalized_dictionary(p), atol=1e-6)


def test_projection_is_idempotent_for_decoding():
    c = SaeConfig(8, 32, 4)
    p = init_sae(jax.random.key(2), c)
    p["dictionary"]["weights"] = p["dictionary"]["weights"] * 3.0
    codes = jax.nn.relu(jax.random.normal(jax.random.key(3), (3, 32)))
    np.testing.assert_allclose(sae_decode(project_dictionary(p), codes),
                               sae_decode(p, codes), atol=1e-6)


def test_gradients_flow_through_kept_codes_only():
    v = jnp.array([[0.1, 3.0, 2.0, -1.0]])
    g = jax.grad(lambda v: (topk_mask(v, 2) * jnp.arange(1.0, 5.0)).sum())(v)
    np.testing.assert_array_equal(g, [[0, 2, 3, 0]])
    # the multiplier is a fixed buffer: zero gradient
    c = SaeConfig(4, 8, 2)
    p = init_sae(jax.random.key(0), c)
    gp = jax.grad(lambda p: sae_decode(p, jnp.ones((1, 8))).sum())(p)
    assert float(gp["dictionary"]["multiplier"]) == 0.0


def test_bad_shapes_raise():
    p = init_sae(jax.random.key(0), SaeConfig(4, 8, 2))
    with pytest.raises(ValueError):
        sae_encode(p, jnp.ones((2, 5)), 2)
    with pytest.raises(ValueError):
        sae_decode(p, jnp.ones((2, 7)))


def test_sae_and_aligner_are_pytrees():
    """Both pass whole through jit (their arrays traced, k / metadata static) and are
    placed with a sharding like any array tree."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from texter_jax.aligner import Aligner, align
    from texter_jax.batching import local_placement
    from texter_jax.sae import Sae, SaeConfig, init_sae, sae_encode

    cfg = SaeConfig(input_dim=8, nb_concepts=32, top_k=4)
    sae = Sae(init_sae(jax.random.key(0), cfg), cfg.top_k)
    al = Aligner(jnp.ones((3, 8)), jnp.zeros(3), metrics={"r2": 0.5}, method="sgd")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 8)), jnp.float32)

    @jax.jit
    def both(sae, al, x):
        return sae_encode(sae.params, x, sae.top_k)[1], align(al.w, al.b, x)

    codes, h = both(sae, al, x)
    assert int(np.max(np.sum(np.asarray(codes) != 0, axis=1))) <= 4
    np.testing.assert_allclose(h, np.asarray(x).sum(1, keepdims=True) * np.ones((1, 3)),
                               rtol=1e-5)
    rep = local_placement().replicated
    placed_sae, placed_al = jax.device_put((sae, al), rep)
    assert isinstance(placed_sae, Sae) and placed_sae.top_k == 4
    assert placed_al.metrics == {"r2": 0.5} and placed_al.method == "sgd"
    assert placed_al.w.sharding == rep
    assert jax.tree.leaves(sae) == jax.tree.leaves(sae.params)
