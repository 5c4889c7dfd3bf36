"""Progress of running MACO loops, reported to the host without recompiling.

The compiled loop calls one fixed host function each step (a new closure per call
would recompile the loop); it forwards the step to the innermost active listener
(see :func:`maco_progress`).
"""

from __future__ import annotations

from typing import Callable

import jax

_LISTENERS: list[Callable[[int], None]] = []
_LAST_STEP: list[int | None] = [None]


def _report_step(t, running, once_per_step) -> None:
    if not bool(running):
        return
    t = int(t)
    # Under vmap the convergence loop's step index is batched and the callback runs once
    # per running image with the same t (once_per_step): report it once.
    if _LISTENERS and not (bool(once_per_step) and t == _LAST_STEP[0]):
        _LISTENERS[-1](t)
    _LAST_STEP[0] = t


class maco_progress:  # noqa: N801 - used as a context manager, like a function
    """Context manager: ``listener(step)`` is called as MACO loops run inside it.

    ``with maco_progress(lambda t: bar.update(...)):`` shows progress of
    :func:`maco`, :func:`maco_batch` and :func:`maco_batch_with_retry` (steps are
    0-based; a vmapped batch reports each step once). Listeners nest.
    """

    def __init__(self, listener: Callable[[int], None]):
        self.listener = listener

    def __enter__(self):
        _LISTENERS.append(self.listener)
        _LAST_STEP[0] = None
        return self

    def __exit__(self, *exc):
        jax.effects_barrier()  # deliver the steps still in flight before detaching
        _LISTENERS.remove(self.listener)
        return False
