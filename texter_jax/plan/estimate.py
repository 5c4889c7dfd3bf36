"""A plan for explaining on a target: memory per device from the compiled programs, and
a roofline estimate of time from the compiler's cost model and published peaks.

These are estimates, not measurements: the cost model's flops and bytes accessed, each
program's time taken as ``max(flops / peak flops, bytes / bandwidth)``, retries of the
all-zero-transparency rule not counted, and the host's time between programs ignored.

The cost model counts a loop's body once, so the figures come from programs with every
loop written out (``unroll``): MACO at 1 and at 2 steps gives one step's cost (their
difference) and the rest (setup and final render); a run of S steps costs
``rest + S * step``. Memory comes from the programs ``explain`` runs (loops rolled).
"""

from __future__ import annotations

import dataclasses
import math

from texter_jax.contributions import default_chunk
from texter_jax.plan.programs import PROGRAMS, CompiledFacts, ExplainSpec, facts, lower_explain
from texter_jax.plan.targets import Target


@dataclasses.dataclass(frozen=True)
class Cost:
    """Cost-model figures of one call, per device: flops, bytes accessed."""

    flops: float
    bytes: float

    def seconds(self, peak_flops: float, bandwidth: float) -> float:
        """Roofline time: the slower of compute and memory traffic."""
        return max(self.flops / peak_flops, self.bytes / bandwidth)

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.bytes + other.bytes)

    def scaled(self, k: float) -> Cost:
        return Cost(self.flops * k, self.bytes * k)


def _cost(f: CompiledFacts) -> Cost:
    return Cost(f.flops, f.bytes_accessed)


@dataclasses.dataclass(frozen=True)
class ExplainPlan:
    """``explain`` on a target at ``batch`` images per device.

    memory: each program as ``explain`` runs it (:class:`CompiledFacts`, per device).
    costs: per call of each program, per device (MACO's for ``steps`` steps).
    maco_step / maco_rest: one MACO step, and MACO's cost outside its steps.
    seconds: roofline time of one batch (all programs in turn); None without peaks.
    """

    target: str
    chip: str | None
    n_devices: int
    hosts: int
    batch: int
    dtype: str
    steps: int
    memory: dict
    costs: dict
    maco_step: Cost
    maco_rest: Cost
    memory_bytes: float | None
    seconds: float | None

    def seconds_on(self, chip) -> float:
        """Roofline time of one batch with another chip's peaks and these cost figures (an
        estimate for a chip this machine cannot compile for, e.g. a GPU from a TPU
        compile's flops and bytes)."""
        peak, bw = chip.flops_for(self.dtype), chip.hbm_bytes_per_s
        total = sum(c.seconds(peak, bw) for k, c in self.costs.items() if k != "maco")
        return total + self.maco_rest.seconds(peak, bw) + self.steps * self.maco_step.seconds(
            peak, bw)

    @property
    def peak_bytes(self) -> int:
        """The largest program's bytes per device (the programs run one after another)."""
        return max(f.peak for f in self.memory.values())

    @property
    def fits(self) -> bool | None:
        return None if self.memory_bytes is None else self.peak_bytes <= self.memory_bytes

    @property
    def per_image(self) -> Cost:
        total = Cost(0.0, 0.0)
        for c in self.costs.values():
            total = total + c
        return total.scaled(1.0 / self.batch)

    @property
    def images_per_minute_per_device(self) -> float | None:
        return None if not self.seconds else 60.0 * self.batch / self.seconds

    @property
    def images_per_minute(self) -> float | None:
        """The whole slice: every device of every host."""
        per = self.images_per_minute_per_device
        return None if per is None else per * self.n_devices * self.hosts

    def to_dict(self) -> dict:
        return {
            "target": self.target, "chip": self.chip, "devices_per_host": self.n_devices,
            "hosts": self.hosts, "batch_per_device": self.batch, "dtype": self.dtype,
            "steps": self.steps, "memory_bytes": self.memory_bytes,
            "peak_bytes": self.peak_bytes, "fits": self.fits,
            "programs": {k: dataclasses.asdict(v) for k, v in self.memory.items()},
            "costs": {k: dataclasses.asdict(v) for k, v in self.costs.items()},
            "maco_step": dataclasses.asdict(self.maco_step),
            "maco_rest": dataclasses.asdict(self.maco_rest),
            "per_image": dataclasses.asdict(self.per_image), "seconds_per_batch": self.seconds,
            "images_per_minute_per_device": self.images_per_minute_per_device,
            "images_per_minute": self.images_per_minute,
        }


def _ig_loops(spec: ExplainSpec, batch: int) -> bool:
    cfg = spec.config
    width = spec.sae.nb_concepts if cfg.use_sae and spec.sae else spec.classifier.feature_dim
    return default_chunk(batch, width, cfg.ig_steps) < cfg.ig_steps


class DoesNotFit(RuntimeError):
    """The compiler refused a program: it needs more device memory than there is."""


def memory_facts(spec: ExplainSpec, target: Target, batch: int) -> dict[str, CompiledFacts]:
    """The programs as ``explain`` runs them, compiled for ``batch`` images per device.

    Raises:
      DoesNotFit: the compiler ran out of device memory for one of them (its message
        says how much it needed).
    """
    lowered = lower_explain(spec, target.placement, batch)
    out = {}
    for name in PROGRAMS:
        try:
            out[name] = facts(name, batch, lowered[name])
        except Exception as e:  # XlaRuntimeError; its type is not public API
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            raise DoesNotFit(f"{name} at {batch} per device on {target.name}: "
                             f"{str(e).splitlines()[0][:300]}") from None
    return out


def _memory_or_none(spec, target, batch):
    try:
        return memory_facts(spec, target, batch)
    except DoesNotFit:
        return None


def plan_explain(spec: ExplainSpec, target: Target, batch: int,
                 memory: dict[str, CompiledFacts] | None = None) -> ExplainPlan:
    """Compiles ``explain``'s programs for ``target`` at ``batch`` images per device and
    estimates a batch's time (see the module docstring for what is assumed).

    ``memory``: already compiled facts of the rolled programs at this batch (to reuse).
    """
    placement = target.placement
    memory = memory or memory_facts(spec, target, batch)
    costs = {"retrieve": _cost(memory["retrieve"])}
    costs["stage1"] = (_cost(facts("stage1", batch, lower_explain(
        spec, placement, batch, unroll=True, only=("stage1",))["stage1"]))
        if _ig_loops(spec, batch) else _cost(memory["stage1"]))
    costs["stage3"] = _cost(facts("stage3", batch, lower_explain(
        spec, placement, batch, unroll=True, only=("stage3",))["stage3"]))
    one, two = (_cost(facts("maco", batch, lower_explain(
        spec, placement, batch, unroll=True, maco_steps=s, only=("maco",))["maco"]))
        for s in (1, 2))
    step = Cost(two.flops - one.flops, two.bytes - one.bytes)
    rest = Cost(one.flops - step.flops, one.bytes - step.bytes)
    if step.flops <= 0 or step.bytes <= 0:
        raise RuntimeError(f"MACO's step cost came out non-positive ({step}); the cost "
                           "model did not count the written-out steps")
    steps = spec.config.maco.steps
    costs["maco"] = rest + step.scaled(steps)
    chip = target.chip
    plan = ExplainPlan(target.name, chip.name if chip else None, target.n_devices,
                       target.hosts, batch, spec.config.compute_dtype or "float32", steps,
                       memory, costs, step, rest, target.memory_bytes, None)
    return plan if chip is None else dataclasses.replace(plan, seconds=plan.seconds_on(chip))


def _peak(found: dict[str, CompiledFacts]) -> int:
    return max(f.peak for f in found.values())


def _predict(lo: tuple[int, dict], hi: tuple[int, dict], budget: float, limit: int) -> int:
    """The batch each program's memory line through two compiled batches reaches at
    ``budget``; the smallest over the programs."""
    (b0, f0), (b1, f1) = lo, hi
    best = limit
    for name in PROGRAMS:
        slope = (f1[name].peak - f0[name].peak) / (b1 - b0)
        if slope > 0:
            best = min(best, b1 + math.floor((budget - f1[name].peak) / slope))
    return max(best, 1)


def largest_batch(spec: ExplainSpec, target: Target, *, margin: float = 0.9,
                  limit: int = 1024, rounds: int = 5) -> tuple[int, dict[str, CompiledFacts]]:
    """The largest per-device batch whose programs fit ``margin`` of the device memory.

    Memory grows with the batch about linearly (the weights once, activations per
    image) but not exactly (the compiler re-tiles and re-schedules at every size): each
    round draws a line through two compiled batches (the largest that fits and the
    smallest that does not, or the two largest so far), compiles the batch it predicts
    at the budget, and keeps the largest that fits. Returns ``(batch, its memory
    facts)``; batch 0 when even one image does not fit.
    """
    if target.memory_bytes is None:
        raise ValueError(f"{target.name}: the device memory is unknown")
    budget = margin * target.memory_bytes
    points = {1: _memory_or_none(spec, target, 1)}
    if points[1] is None or _peak(points[1]) > budget:
        return 0, points[1]
    fit, over, nxt = 1, None, 2
    for _ in range(rounds):
        points[nxt] = _memory_or_none(spec, target, nxt)
        if points[nxt] is not None and _peak(points[nxt]) <= budget:
            fit = max(fit, nxt)
        else:
            over = nxt if over is None else min(over, nxt)
        if over is not None:
            if over - fit <= 1:
                break
            if points[over] is None:  # the compiler refused it: no line, bisect
                guess = (fit + over) // 2
            else:
                guess = _predict((fit, points[fit]), (over, points[over]), budget, limit)
            nxt = min(max(guess, fit + 1), over - 1)
        else:
            below = max(b for b in points if b < fit)
            nxt = min(_predict((below, points[below]), (fit, points[fit]), budget, limit),
                      limit)
            if nxt <= fit:
                break
        if nxt in points:
            break
    return fit, points[fit]
