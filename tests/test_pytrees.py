"""Aligner and Sae are pytrees: they pass whole through jit, vmap, device_put and
shardings, with numbers checked against closed forms in numpy. The multi-device part
runs this file as a script in a fresh process with 4 host devices (the device count is
fixed when JAX starts), as ``tests/test_sharding.py`` does with its probe.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tests.test_pytrees
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from texter_jax.aligner import Aligner, align
from texter_jax.sae import Sae, SaeConfig, init_sae, sae_decode, sae_encode

REPO = Path(__file__).resolve().parents[1]
E, D, N, K = 8, 6, 24, 4  # embedding, features, SAE codes, codes kept


def _aligner(seed=0, **kw) -> Aligner:
    rng = np.random.default_rng(seed)
    return Aligner(rng.normal(size=(E, D)).astype(np.float32),
                   rng.normal(size=E).astype(np.float32), **kw)


def _sae() -> Sae:
    return Sae(init_sae(jax.random.key(1), SaeConfig(input_dim=D, nb_concepts=N, top_k=K)),
               K)


def _np_sae(params, x):
    """TopK SAE in numpy: (codes [B, n], x_hat [B, d])."""
    pre = x @ np.asarray(params["encoder"]["kernel"]) + np.asarray(params["encoder"]["bias"])
    acts = np.maximum(pre, 0)
    kth = np.sort(acts, axis=1)[:, -K][:, None]
    codes = np.where(acts >= kth, acts, 0)  # random floats: no ties at the k-th value
    w = np.asarray(params["dictionary"]["weights"])
    dic = w / (np.linalg.norm(w, axis=1, keepdims=True) + 1e-8)
    return codes, codes @ dic


def _z(rows=5, seed=2):
    return np.random.default_rng(seed).normal(size=(rows, D)).astype(np.float32)


def test_jit_takes_an_aligner_and_a_sae_whole():
    al, sae, z = _aligner(metrics={"r2": 0.9}, method="sgd"), _sae(), _z()

    @jax.jit
    def both(al, sae, z):
        codes = sae_encode(sae.params, z, sae.top_k)[1]
        return align(al.w, al.b, z), codes, sae_decode(sae.params, codes)

    h, codes, x_hat = both(al, sae, z)
    np.testing.assert_allclose(h, z @ al.w.T + al.b, rtol=1e-5, atol=1e-5)
    want_codes, want_x_hat = _np_sae(sae.params, z)
    np.testing.assert_allclose(codes, want_codes, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x_hat, want_x_hat, rtol=1e-5, atol=1e-5)
    assert [str(p[0]) for p, _ in jax.tree_util.tree_flatten_with_path(al)[0]] == [".w", ".b"]
    assert jax.tree.leaves(sae) == jax.tree.leaves(sae.params)  # k is not a leaf


def test_vmap_over_a_stack_of_aligners_and_a_batch_of_features():
    als = [_aligner(s) for s in range(3)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *als)  # one Aligner, w [3, E, D]
    assert isinstance(stacked, Aligner) and stacked.w.shape == (3, E, D)
    zs = np.stack([_z(4, s) for s in range(3)])  # [3, 4, D]
    h = jax.vmap(lambda a, z: align(a.w, a.b, z))(stacked, zs)
    for i, a in enumerate(als):
        np.testing.assert_allclose(h[i], zs[i] @ a.w.T + a.b, rtol=1e-5, atol=1e-5)
    sae = _sae()  # the SAE whole and unbatched, the features one row per call
    codes = jax.vmap(lambda s, z: sae_encode(s.params, z[None], s.top_k)[1][0],
                     in_axes=(None, 0))(sae, zs[0])
    np.testing.assert_allclose(codes, _np_sae(sae.params, zs[0])[0], rtol=1e-5, atol=1e-6)


def test_metrics_ride_in_the_treedef_by_value():
    """Equal metrics (distinct objects) are one treedef and one compile; their values come
    back as given (no JSON round trip); other metrics are another treedef, and
    ``bare()`` drops them, which is what explain's compiled programs take."""
    metrics = {"r2": np.float32(0.5), "epoch_loss": [3.0, 2.0], "shape": (2, 3)}
    a = _aligner(metrics=metrics, method="sgd")
    twin = _aligner(metrics=json.loads(json.dumps({**metrics, "r2": 0.5})), method="sgd")
    t_a, t_twin = jax.tree.structure(a), jax.tree.structure(twin)
    assert hash(t_a) == hash(jax.tree.structure(_aligner(metrics=dict(metrics), method="sgd")))
    back = jax.tree.map(lambda x: x, a)
    assert back.metrics == metrics and type(back.metrics["r2"]) is np.float32
    assert back.metrics["shape"] == (2, 3) and back.method == "sgd"
    f = jax.jit(lambda al: al.w.sum() + al.b.sum())
    f(a), f(_aligner(1, metrics=dict(metrics), method="sgd"))
    assert f._cache_size() == 1
    # Compared as JSON text, with repr for what JSON lacks: np.float32(0.5) is not 0.5.
    assert t_a != t_twin
    f(dataclasses.replace(a, metrics={"r2": 0.1}))
    assert f._cache_size() == 2
    assert jax.tree.structure(a.bare()) == jax.tree.structure(_aligner(3).bare())
    assert a.bare().metrics == {} and a.bare().method == "unknown"


def test_explain_programs_compile_once_for_aligners_that_differ_only_in_metrics():
    from tests.test_explain import _setup
    from texter_jax.batching import local_placement
    from texter_jax.explain import text_to_concept_embed_batch
    from texter_jax.programs import baseline_program

    clf, v, _, al, _, images = _setup()
    program = baseline_program(local_placement())
    before = program._cache_size()
    out = [text_to_concept_embed_batch(clf, v, dataclasses.replace(al, metrics=m), images)[2]
           for m in ({"r2": 0.1}, {"r2": 0.2, "n": 3})]
    assert program._cache_size() == before + 1
    np.testing.assert_array_equal(out[0], out[1])


def _sharding_probe() -> dict:
    """With 4 host devices: the Aligner placed with w and b split along E, and a jit whose
    in_shardings place it (and an Sae replicated). Returns what each leaf's shards hold."""
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.asarray(jax.devices()), ("e",))
    rows, rep = NamedSharding(mesh, P("e", None)), NamedSharding(mesh, P())
    al, sae, z = _aligner(metrics={"r2": 0.9}, method="sgd"), _sae(), _z(4)
    # A sharding tree shaped like the Aligner (same treedef, metrics included).
    placement = dataclasses.replace(al, w=rows, b=NamedSharding(mesh, P("e")))
    placed = jax.device_put(al, placement)

    def shards(x, want=None):
        return {"spec": list(x.sharding.spec), "same": x.sharding == want,
                "shapes": sorted({tuple(s.data.shape) for s in x.addressable_shards}),
                "devices": sorted(int(s.device.id) for s in x.addressable_shards)}

    step = jax.jit(lambda al, sae, z: (align(al.w, al.b, z),
                                       sae_encode(sae.params, z, sae.top_k)[1]),
                   in_shardings=(placement, rep, rep),
                   out_shardings=(NamedSharding(mesh, P(None, "e")), rep))
    compiled = step.lower(al, sae, z).compile()
    h, codes = step(al, sae, z)
    return {"devices": jax.device_count(), "metrics": placed.metrics,
            "w": shards(placed.w, placement.w), "b": shards(placed.b, placement.b),
            "h": shards(h),
            "in_w": compiled.input_shardings[0][0].w.is_equivalent_to(placement.w, 2),
            "h_err": float(np.max(np.abs(np.asarray(h) - (z @ al.w.T + al.b)))),
            "codes_err": float(np.max(np.abs(np.asarray(codes) - _np_sae(sae.params, z)[0])))}


def test_aligner_shards_over_host_devices():
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, "-m", "tests.test_pytrees"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["devices"] == 4 and found["metrics"] == {"r2": 0.9}
    for leaf, shape in (("w", (E // 4, D)), ("b", (E // 4,))):
        assert found[leaf]["same"] and found[leaf]["shapes"] == [list(shape)], found[leaf]
        assert found[leaf]["devices"] == [0, 1, 2, 3]
    assert found["in_w"]  # the compiled program takes w as in_shardings placed it
    assert found["h"]["spec"] == [None, "e"]
    assert found["h"]["shapes"] == [[4, E // 4]]
    assert found["h_err"] < 1e-5 and found["codes_err"] < 1e-5


if __name__ == "__main__":
    jax.config.update("jax_default_matmul_precision", "highest")
    print(json.dumps(_sharding_probe()))
