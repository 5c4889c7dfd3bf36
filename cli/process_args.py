"""Command-line flags for runs split over several processes (``texter eval``,
``texter extract-features``); see :mod:`texter_jax.distributed`."""

from __future__ import annotations

import sys

from texter_jax.distributed import ProcessGroup, initialize


def add_process_args(parser) -> None:
    g = parser.add_argument_group(
        "several processes (jax.distributed: one process per host or GPU, each on its "
        "share of the images; process 0 merges)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="process 0's address, the same for every process")
    g.add_argument("--num-processes", type=int, default=None)
    g.add_argument("--process-id", type=int, default=None)
    g.add_argument("--distributed-auto", action="store_true",
                   help="let jax.distributed find the processes (TPU pod slice, Slurm, "
                        "Open MPI)")


def process_group(args, command: str) -> ProcessGroup | None:
    """Joins the run's processes from the flags; None (after a one-line error) if they
    are inconsistent or the coordinator cannot be reached."""
    try:
        return initialize(args.coordinator, args.num_processes, args.process_id,
                          auto=args.distributed_auto)
    except (ValueError, RuntimeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"texter {command}: error: {msg}", file=sys.stderr)
        return None
