"""Batch sizes from memory, not guesses: the largest batch whose compiled programs fit the
running backend's devices (``texter explain --batch-size auto``, ``Session.explain``)."""

from __future__ import annotations

import dataclasses
import math

from texter_jax.plan.chips import GIB
from texter_jax.plan.estimate import largest_batch
from texter_jax.plan.programs import ExplainSpec
from texter_jax.plan.targets import Target, local_target


class BatchTooLarge(RuntimeError):
    """Not even one image per device fits (the message names the bytes)."""


@dataclasses.dataclass(frozen=True)
class BatchChoice:
    """``batch``: images per ``explain_batch`` call (all local devices together);
    ``per_device``; ``peak_bytes`` the largest program needs per device at that batch;
    ``memory_bytes`` per device; ``margin`` the fraction allowed."""

    batch: int
    per_device: int
    peak_bytes: int
    memory_bytes: float
    margin: float

    def describe(self) -> str:
        return (f"batch size {self.batch} ({self.per_device} per device): the largest "
                f"program needs {self.peak_bytes / GIB:.2f} GiB per device of "
                f"{self.memory_bytes / GIB:.2f} GiB ({self.margin:.0%} allowed)")


def auto_batch(spec: ExplainSpec, *, images: int | None = None, margin: float = 0.8,
               target: Target | None = None) -> BatchChoice:
    """The largest batch of ``spec``'s programs that fits ``margin`` of each local device's
    memory (``memory_analysis()`` of the compiled programs, :func:`largest_batch`), at
    most what ``images`` images need.

    Raises:
      BatchTooLarge: one image per device already needs more (bytes named).
    """
    target = target or local_target()
    if target.memory_bytes is None:
        raise BatchTooLarge(f"{target.name}: the device memory is unknown; give a batch "
                            "size")
    limit = 1024 if images is None else max(1, math.ceil(images / target.n_devices))
    per_device, found = largest_batch(spec, target, margin=margin, limit=limit)
    if per_device == 0:
        need = ("more than the device holds (the compiler refused it)" if found is None
                else f"{max(f.peak for f in found.values()) / GIB:.2f} GiB")
        raise BatchTooLarge(
            f"one image per device needs {need} but {target.name} has "
            f"{target.memory_bytes / GIB:.2f} GiB per device ({margin:.0%} allowed); use a "
            "smaller canvas (--canvas), fewer crops or --bf16")
    return BatchChoice(per_device * target.n_devices, per_device,
                       max(f.peak for f in found.values()), target.memory_bytes, margin)
