"""Where a plan compiles for: a TPU topology (compiled on this machine by libtpu, no TPU
needed) or the running backend (CPU, or a GPU when there is one).

A run of ``explain`` is one process per host, each splitting its batches over its own
devices (:mod:`texter_jax.distributed`), so a plan compiles each program over one
host's devices; a multi-host slice runs as many copies as it has hosts.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os

import jax

from texter_jax.batching import Placement, placement_over
from texter_jax.plan.chips import CHIPS, Chip, chip_of_kind


class TargetError(ValueError):
    """A target the planner cannot compile for (unknown topology, no libtpu)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One host's devices of a run, and what the planner knows of them.

    Attributes:
      name: ``"v5e:2x2"``, ``"cpu"``, ``"gpu"``.
      devices: the devices one process splits its batches over.
      hosts: processes (hosts) in the whole slice.
      chip: peaks per device, when the table knows the chip.
      memory_bytes: memory per device the programs may use.
      slice_devices: every device of the slice (for programs that span hosts, such as
        data-parallel training with its gradient sums); ``devices`` when None.
    """

    name: str
    devices: tuple
    hosts: int
    chip: Chip | None
    memory_bytes: float | None
    slice_devices: tuple | None = None

    @property
    def placement(self) -> Placement:
        return placement_over(self.devices)

    @property
    def slice_placement(self) -> Placement:
        """Every device of the slice (one program over all hosts)."""
        return placement_over(self.slice_devices or self.devices)

    @property
    def n_devices(self) -> int:
        return len(self.devices)


def tpu_target(topology: str) -> Target:
    """A TPU slice by topology name (``"v5e:2x2"``, ``"v5p:4x4x4"``, ``"v6e:4x4"``):
    host 0's devices."""
    if importlib.util.find_spec("libtpu") is None:
        raise TargetError(f"cannot compile for TPU topology {topology!r}: the TPU compiler "
                          "is not installed (pip install \"jax[tpu]==" + jax.__version__
                          + "\")")
    try:
        from jax.experimental import topologies

        desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
    except Exception as e:  # a name libtpu does not know, or libtpu refusing to load
        raise TargetError(
            f"cannot compile for TPU topology {topology!r}: {str(e).splitlines()[0][:200]} "
            "(names look like v5e:2x2, v5p:2x2x1, v6e:2x2, v4:2x2x1)") from None
    devices = desc.devices
    hosts = len({d.process_index for d in devices})
    mine = tuple(d for d in devices if d.process_index == devices[0].process_index)
    chip = chip_of_kind(mine[0].device_kind)
    if chip is None:
        raise TargetError(f"{topology}: no peaks known for device kind "
                          f"{mine[0].device_kind!r} (known: {', '.join(CHIPS)})")
    return Target(topology, mine, hosts, chip, chip.hbm_bytes, tuple(devices))


def _host_available_bytes() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def local_target() -> Target:
    """The running backend's local devices. Memory per device: the device's own limit
    (GPUs), else this host's available memory shared by its devices (CPU)."""
    devices = tuple(jax.local_devices())
    dev = devices[0]
    stats = None
    try:
        stats = dev.memory_stats()
    except Exception:  # some backends report none
        stats = None
    if stats and stats.get("bytes_limit"):
        memory = float(stats["bytes_limit"])
    else:
        avail = _host_available_bytes()
        memory = None if avail is None else avail / len(devices)
    return Target(dev.platform, devices, jax.process_count(), chip_of_kind(dev.device_kind),
                  memory)


def target(name: str) -> Target:
    """``"local"`` (the running backend) or a TPU topology name."""
    return local_target() if name == "local" else tpu_target(name)


def quiet_libtpu() -> None:
    """On a machine without a TPU, libtpu prints errors when it loads (it looks for the
    TPU hosts it is not on). Setting the accelerator type and worker list it looks for
    silences it; the topology a plan names still decides what is compiled (the same
    program compiles to the same figures either way). Several processes may load libtpu
    at once (compiling holds no TPU). Does nothing where a TPU is
    attached (``/dev/accel*`` or ``/dev/vfio/<n>``) or the variables are set; call before
    the first topology is built."""
    if glob.glob("/dev/accel*") or [p for p in glob.glob("/dev/vfio/*") if p[-1].isdigit()]:
        return
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # Compiling needs no TPU, so no exclusive hold on one: several processes may plan.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
