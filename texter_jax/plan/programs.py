"""``explain``'s programs lowered with abstract arguments, and what their compiled form
says: memory per device, the compiler's cost figures, host transfers and collectives.

The programs are the ones :func:`~texter_jax.explain.explain_batch` runs
(:mod:`texter_jax.programs`, MACO's :func:`~texter_jax.emphasis.render.maco_batch_program`),
built for the target's placement, with the batch split over its devices and the weights
whole on each, exactly as ``explain`` places them. No array is allocated: weights and
inputs are ``jax.ShapeDtypeStruct`` with their shardings.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp

from texter_jax.aligner import Aligner
from texter_jax.batching import Placement
from texter_jax.config import ExplainConfig
from texter_jax.emphasis import (
    features_objective,
    logits_objective,
    maco_batch_program,
    sae_objective,
    spectrum_shape,
)
from texter_jax.plan import hlo as hlo_text
from texter_jax.programs import retrieve_program, stage1_program, stage3_program
from texter_jax.sae import Sae, SaeConfig, init_sae, sae_encode

PROGRAMS = ("stage1", "maco", "stage3", "retrieve")
COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "all-to-all",
               "reduce-scatter")


@dataclasses.dataclass(frozen=True)
class ExplainSpec:
    """What is explained: the classifier (``variables`` may be abstract), the SAE and
    aligner shapes, the bank size and the settings."""

    classifier: Any
    variables: Any
    config: ExplainConfig
    sae: SaeConfig | None
    clip_dim: int
    n_texts: int = 130


@dataclasses.dataclass(frozen=True)
class CompiledFacts:
    """One compiled program, per device: bytes (argument, output, alias, temp, code), the
    cost model's flops / bytes accessed / transcendentals, how many host transfer ops
    and collectives of each kind run per run (loops multiplied out, :mod:`.hlo`), and
    the compile time."""

    program: str
    batch: int
    argument: int
    output: int
    alias: int
    temp: int
    code: int
    flops: float
    bytes_accessed: float
    transcendentals: float
    host_transfers: int
    collectives: dict
    compile_s: float

    @property
    def peak(self) -> int:
        """Bytes the program holds at once on a device (arguments, outputs and temps;
        aliased outputs counted once)."""
        return self.argument + self.output - self.alias + self.temp + self.code


def facts(name: str, batch: int, lowered) -> CompiledFacts:
    """Compiles ``lowered`` and reads its figures."""
    t0 = time.perf_counter()
    compiled = lowered.compile()
    seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older JAX: one dict per computation
        cost = cost[0] if cost else {}
    hlo = compiled.as_text()
    return CompiledFacts(
        name, batch, int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes),
        int(mem.alias_size_in_bytes), int(mem.temp_size_in_bytes),
        int(mem.generated_code_size_in_bytes), float(cost.get("flops", 0.0)),
        float(cost.get("bytes accessed", 0.0)), float(cost.get("transcendentals", 0.0)),
        hlo_text.executions(hlo, hlo_text.HOST_TRANSFER),
        {op: hlo_text.executions(hlo, rf"\b{op}(-start)?\(") for op in COLLECTIVES}, seconds)


def _spec_of(x, sharding):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def _placed(tree, sharding):
    return jax.tree.map(lambda x: _spec_of(x, sharding), tree)


def _keys(n: int, sharding):
    return _spec_of(jax.eval_shape(lambda: jax.random.split(jax.random.key(0), n)), sharding)


def _batch(shape, dtype, placement: Placement):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=placement.batch)


def lower_explain(spec: ExplainSpec, placement: Placement, batch: int, *,
                  unroll: bool = False, maco_steps: int | None = None,
                  maco_every: int = 0, only: tuple[str, ...] = PROGRAMS) -> dict[str, Any]:
    """``explain``'s programs lowered for ``batch`` images per device over ``placement``.

    Args:
      unroll: write every loop out (IG's chunks, MACO's steps, the percentiles'
        bisection), so the cost model counts each iteration.
      maco_steps: MACO's step count for this lowering (default: the config's).
      maco_every: MACO's progress reports every this many steps (0: none, as
        ``explain`` without a listener).
      only: which of :data:`PROGRAMS` to lower.

    Returns:
      ``{name: jax.stages.Lowered}``.
    """
    clf = spec.classifier
    cfg = spec.config.for_image_size(clf.image_size)  # MACO's crops: the model's input
    rep = placement.replicated
    n = batch * placement.n_devices
    size, canvas = clf.image_size, cfg.maco.canvas
    variables = _placed(spec.variables, rep)
    use_sae = cfg.use_sae and spec.sae is not None
    sae = None
    if use_sae:
        sae = Sae(_placed(jax.eval_shape(lambda k: init_sae(k, spec.sae), jax.random.key(0)),
                          rep), spec.sae.top_k)
    out = {}
    if "stage1" in only:
        out["stage1"] = stage1_program(placement).lower(
            variables, sae, _batch((n, size, size, 3), jnp.float32, placement), None,
            _keys(n, placement.batch), classifier=clf, steps=cfg.ig_steps,
            method=cfg.ig_method, ranked=cfg.ranked_units, ranking=cfg.unit_ranking,
            selector="ig", unroll=unroll)
    if "maco" in only:
        if cfg.objective == "class_logit":
            objective, width = logits_objective(clf, variables,
                                                compute_dtype=cfg.compute_dtype), 1
        elif use_sae:
            objective = sae_objective(clf, variables, sae_encode, sae.params,
                                      top_k=spec.sae.top_k, compute_dtype=cfg.compute_dtype)
            width = cfg.ranked_units
        else:
            objective = features_objective(clf, variables, compute_dtype=cfg.compute_dtype)
            width = cfg.ranked_units
        maco_cfg = cfg.maco if maco_steps is None else dataclasses.replace(
            cfg.maco, steps=maco_steps)
        out["maco"] = maco_batch_program(placement).lower(
            objective, _keys(n, placement.batch),
            jax.ShapeDtypeStruct(spectrum_shape(canvas), jnp.float32, sharding=rep),
            _batch((n, width), jnp.int32, placement), _batch((n, width), bool, placement),
            jax.ShapeDtypeStruct((), jnp.int32, sharding=rep), config=maco_cfg,
            every=maco_every, unroll=unroll)
    if "stage3" in only:
        e, d = spec.clip_dim, clf.feature_dim
        canvas_spec = _batch((n, canvas, canvas, 3), jnp.float32, placement)
        aligner = Aligner(jax.ShapeDtypeStruct((e, d), jnp.float32, sharding=rep),
                          jax.ShapeDtypeStruct((e,), jnp.float32, sharding=rep))
        out["stage3"] = stage3_program(placement).lower(
            variables, aligner, _keys(n, placement.batch),
            canvas_spec, canvas_spec, classifier=clf, n_crops=cfg.map_crops,
            whole=cfg.map_whole_canvas, unroll=unroll)
    if "retrieve" in only:
        views = cfg.map_crops + int(cfg.map_whole_canvas)
        out["retrieve"] = retrieve_program(placement).lower(
            _batch((n, views, spec.clip_dim), jnp.float32, placement),
            jax.ShapeDtypeStruct((spec.n_texts, spec.clip_dim), jnp.float32, sharding=rep))
    return out
