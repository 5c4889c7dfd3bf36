"""Where every batched program puts its work, read from the compiled programs on 4 host
devices: how its batch and weights are placed, how its outputs come back, and the
collectives each run executes (loops multiplied out). Prints the table for the docs.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \\
        python bench/placements.py

Tiny models (the measured placements do not depend on the sizes).
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from texter_jax.batching import local_placement  # noqa: E402
from texter_jax.plan.hlo import COLLECTIVE, executions  # noqa: E402

ROWS: list[tuple[str, str, str, str, str]] = []


def _layout(leaf) -> str:
    spec = getattr(leaf.sharding, "spec", None)
    shards = leaf.addressable_shards
    if len(shards) == 1:
        return "one device"
    if spec is not None and len(spec) and spec[0] is not None:
        return f"split on axis 0 ({shards[0].data.shape[0]} of {leaf.shape[0]} per device)"
    return f"whole on each of {len(shards)} devices"


def record(name: str, program, args, static=None, parallel: str = "") -> None:
    """Compiles ``program`` on ``args``, runs it, and adds a table row."""
    static = static or {}
    hlo = program.lower(*args, **static).compile().as_text()
    out = jax.tree.leaves(program(*args, **static))
    layouts = sorted({_layout(x) for x in out})
    coll = executions(hlo, COLLECTIVE)
    kinds = sorted({k for k in ("all-gather", "all-reduce", "collective-permute", "all-to-all",
                                "reduce-scatter") if executions(hlo, rf"\b{k}(-start)?\(")})
    ROWS.append((name, "; ".join(layouts), f"{coll}" + (f" ({', '.join(kinds)})" if kinds else ""),
                 parallel, ""))


def explain_programs() -> None:
    import texter_jax.emphasis.render as render
    import texter_jax.emphasis.retry as retry
    import texter_jax.explain as ex
    from tests.multi_device_probe import eight_images
    from tests.test_explain import CONFIG

    calls: dict[str, tuple] = {}

    def recording(name, factory):
        def make(placement):
            program = factory(placement)

            def call(*a, **k):
                calls.setdefault(name, (program, a, k))
                return program(*a, **k)
            return call
        return make

    ex.stage1_program = recording("stage 1 (predict + IG)", ex.stage1_program)
    render.maco_batch_program = recording("MACO loop", render.maco_batch_program)
    ex.stage3_program = recording("stage 3 (read concept images)", ex.stage3_program)
    ex.retrieve_program = recording("retrieval", ex.retrieve_program)
    ex.baseline_program = recording("Text-to-Concept", ex.baseline_program)
    clf, v, sae, al, text, images = eight_images()
    ex.explain_batch(clf, v, al, text, images, ex.image_keys(3, range(8)), CONFIG, sae=sae)
    ex.text_to_concept_batch(clf, v, al, text, images)
    for name, (program, a, k) in calls.items():
        record(name, program, a, k, "per device (shard_map), weights whole on each")
    needs, take, put, bump = retry._programs(local_placement())
    t = local_placement().put_batch(jnp.zeros((8, 4, 4, 3)))
    record("retry: which rows", needs, (t,), parallel="per device")
    rows = np.array([1, 6, 6, 6], np.int32)
    record("retry: gather the rows to re-run", take, ((t,), rows),
           parallel="moves rows between devices (by design)")


def eval_programs() -> None:
    from tests.test_explain import _setup
    from texter_jax.eval.scoring import PROGRAMS

    clf, v, sae, al, text, images = _setup()
    p = local_placement()
    x = p.put_batch(jnp.asarray(np.concatenate([images, images, images[:2]])))
    vr = p.put_replicated(v)
    record("eval: predict", PROGRAMS["predict"](p), (vr, x), {"classifier": clf},
           "per device (shard_map)")
    rng = np.random.default_rng(0)
    a = p.put_batch(jnp.asarray(rng.normal(size=(8, 16)), jnp.float32))
    m = p.put_batch(jnp.ones((8, 16), bool))
    record("eval: sanity Spearman", PROGRAMS["spearman"](p), (a, a, m),
           parallel="per device (shard_map)")


def training_programs() -> None:
    from tests.test_explain import _setup
    from texter_jax.sae import SaeConfig, init_sae
    from texter_jax.train.feature_forward import make_forward
    from texter_jax.train.sae_train import (
        SaeTrainConfig,
        _zero_acc,
        make_optimizer,
        make_train_step,
    )

    clf, v, *_, images = _setup()
    images = np.concatenate([images, images, images[:2]])
    forward, put = make_forward(clf.features, 8, variables=v, shard=True)
    x = put((images * 255).astype(np.uint8))
    p = local_placement()
    record("feature extraction forward", jax.jit(lambda vv, xx: forward(xx)), (None, x),
           parallel="per device (shard_map)")
    cfg = SaeConfig(input_dim=16, nb_concepts=64, top_k=8)
    tx = make_optimizer(SaeTrainConfig())
    params = init_sae(jax.random.key(0), cfg)
    state = p.put_replicated({"params": params, "opt_state": tx.init(params),
                              "acc": _zero_acc(64),
                              "rng": jax.random.key_data(jax.random.key(0))})
    step = make_train_step(tx, cfg.top_k, p)
    xb = p.put_batch(jnp.ones((32, 16)))
    record("SAE training step", step.program, (state, xb),
           parallel="data parallel: rows split, gradients and metrics summed (psum)")
    from texter_jax.train.aligner import _make_epoch_fn, sgd_optimizer

    tx = sgd_optimizer(0.01)
    al = p.put_replicated({"W": jnp.zeros((4, 16)), "b": jnp.zeros(4)})
    epoch = _make_epoch_fn(tx, p)
    data = p.put_replicated((jnp.ones((64, 16)), jnp.ones((64, 4))))
    idx, mask = p.put_batch((jnp.zeros((8, 3), jnp.int32), jnp.ones((8, 3))))
    record("aligner SGD epoch", epoch.program,
           (al, p.put_replicated(tx.init(al)), *data, idx, mask),
           parallel="data parallel: each batch's rows split, gradients summed (psum)")


def main() -> None:
    n = jax.device_count()
    explain_programs()
    eval_programs()
    training_programs()
    print(f"Measured on {n} {jax.devices()[0].platform} devices, jax {jax.__version__}.\n")
    print("| program | outputs | collectives per run | how the work splits |")
    print("|---|---|---|---|")
    for name, layouts, coll, parallel, _ in ROWS:
        print(f"| {name} | {layouts} | {coll} | {parallel} |")


if __name__ == "__main__":
    main()
