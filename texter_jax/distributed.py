"""Several processes, one run: JAX's multi-controller runtime for data-parallel jobs.

Explaining or featurising images is embarrassingly parallel, so a multi-host run is N
copies of the same program (one per host, or per GPU), each on its own share of the
inputs and its own local devices, meeting only at barriers: before the outputs are
merged, and at the end. ``jax.distributed`` provides the processes' identities and the
barrier (a tiny collective over every process's devices), on TPU pod slices, GPU
clusters (Slurm, Open MPI: found automatically) and, for tests, several CPU processes
on one machine with a loopback coordinator (collectives through gloo).

Every stage inside a process shards its batch over ``jax.local_devices()`` only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the run: ``index`` in ``[0, count)``."""

    index: int = 0
    count: int = 1

    @property
    def is_main(self) -> bool:
        """Process 0 merges outputs and writes the run's summary."""
        return self.index == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's items: every ``count``-th from ``index`` (balanced to one item)."""
        return list(items[self.index::self.count])

    def owns(self, i: int) -> bool:
        """Whether item ``i`` of a sequence falls in this process's :meth:`share`."""
        return i % self.count == self.index

    def barrier(self, name: str) -> None:
        """Waits until every process reaches the barrier ``name`` (no-op for one)."""
        if self.count > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)


SINGLE = ProcessGroup()


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, auto: bool = False) -> ProcessGroup:
    """Joins the run's processes; call before any other JAX work in the process.

    Args:
      coordinator: ``host:port`` of process 0's coordinator service.
      num_processes, process_id: the run's size and this process's index.
      auto: let ``jax.distributed`` find all three (TPU pods, Slurm, Open MPI).
    Returns:
      the :class:`ProcessGroup`; :data:`SINGLE` when nothing asks for more than one.
    Raises:
      ValueError: a partial or inconsistent set of arguments.
    """
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if not auto and not any(given):
        return SINGLE
    if not auto and not all(given):
        raise ValueError("multi-process runs need --coordinator HOST:PORT, --num-processes "
                         "and --process-id together (or --distributed-auto on a TPU pod, "
                         "Slurm or Open MPI)")
    if not auto:
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(f"--process-id {process_id} must be in [0, {num_processes}) and "
                             "--num-processes >= 1")
        if num_processes == 1:
            return SINGLE
    import jax

    try:  # CPU processes reach each other's devices through gloo (barriers only)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except AttributeError:  # an older jax without the option: its default
        pass
    if auto:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    return ProcessGroup(jax.process_index(), jax.process_count())
