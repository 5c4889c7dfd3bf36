"""Published peaks of the accelerators the planner estimates for, per JAX device.

A JAX device is one chip on v5e, v5p, v6e and the GPUs, and one TensorCore on v4
(the topology API lists ``v4:2x2x1`` as 8 devices, two per chip): v4's figures here
are half a chip's.

The roofline the planner draws assumes the dense bf16 matmul peak for every matmul and
convolution: JAX's default precision on TPU runs float32 matmul inputs through bf16
passes at that rate (``jax_default_matmul_precision="highest"`` runs several passes and
costs several times more). On GPUs the default float32 matmul uses TF32 tensor cores,
about half the bf16 rate: the GPU rows carry that figure for float32.

Sources (dense, no sparsity):
  TPU v4: https://cloud.google.com/tpu/docs/v4 (275 TFLOP/s bf16, 32 GiB HBM2 at
    1,228 GB/s per chip).
  TPU v5e: https://cloud.google.com/tpu/docs/v5e (197 TFLOP/s bf16, 16 GiB HBM2 at
    819 GB/s per chip).
  TPU v5p: https://cloud.google.com/tpu/docs/v5p (459 TFLOP/s bf16, 95 GiB HBM2e at
    2,765 GB/s per chip).
  TPU v6e (Trillium): https://cloud.google.com/tpu/docs/v6e (918 TFLOP/s bf16, 32 GiB
    HBM at 1,640 GB/s per chip).
  NVIDIA H100 SXM5: https://www.nvidia.com/en-us/data-center/h100/ datasheet (989
    TFLOP/s bf16 and 495 TF32 dense, 80 GB HBM3 at 3.35 TB/s).
  NVIDIA H200 SXM: https://www.nvidia.com/en-us/data-center/h200/ datasheet (989 / 495,
    141 GB HBM3e at 4.8 TB/s).
"""

from __future__ import annotations

import dataclasses

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
    """Peaks of one JAX device.

    Attributes:
      name: short name (``"v5e"``, ``"h100"``).
      hbm_bytes: device memory.
      bf16_flops: dense bf16 matmul peak, FLOP/s.
      f32_flops: the rate float32 matmuls run at under JAX's default precision.
      hbm_bytes_per_s: memory bandwidth.
      device_kinds: ``jax.Device.device_kind`` strings that mean this chip.
    """

    name: str
    hbm_bytes: float
    bf16_flops: float
    f32_flops: float
    hbm_bytes_per_s: float
    device_kinds: tuple[str, ...]

    def flops_for(self, dtype: str) -> float:
        return self.bf16_flops if dtype == "bfloat16" else self.f32_flops


CHIPS: dict[str, Chip] = {c.name: c for c in (
    # one TensorCore (half a v4 chip) per JAX device
    Chip("v4", 16 * GIB, 137.5e12, 137.5e12, 614e9, ("TPU v4",)),
    Chip("v5e", 16 * GIB, 197e12, 197e12, 819e9, ("TPU v5 lite", "TPU v5e")),
    Chip("v5p", 95 * GIB, 459e12, 459e12, 2765e9, ("TPU v5", "TPU v5p")),
    Chip("v6e", 32 * GIB, 918e12, 918e12, 1640e9, ("TPU v6 lite", "TPU v6e")),
    Chip("h100", 80e9, 989e12, 495e12, 3.35e12, ("NVIDIA H100 80GB HBM3", "NVIDIA H100")),
    Chip("h200", 141e9, 989e12, 495e12, 4.8e12, ("NVIDIA H200",)),
)}


def chip_of_kind(device_kind: str) -> Chip | None:
    """The table's entry for a ``device_kind`` (exact, else by prefix), or None."""
    for chip in CHIPS.values():
        if device_kind in chip.device_kinds:
            return chip
    for chip in CHIPS.values():
        if any(device_kind.startswith(k) for k in chip.device_kinds if "TPU" not in k):
            return chip
    return None
