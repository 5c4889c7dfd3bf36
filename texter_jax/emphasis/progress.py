"""Progress of MACO loops: reported to the host only when someone listens.

Whether a compiled MACO loop talks to the host is decided when it is traced, by its
static ``report_every``: 0 compiles no host callback at all (nothing leaves the device
while the loop runs); N > 0 runs the steps in windows of N and calls the host once per
window, ``ceil(steps / N)`` times per run. The listener is an explicit argument
(``progress=`` of :func:`~texter_jax.emphasis.render.maco_batch` and
:func:`~texter_jax.explain.explain_batch`); it reaches the compiled loop as a traced
integer token, so a new listener does not recompile the loop.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from collections.abc import Callable

import jax
import numpy as np

# At most this many reports per MACO run by default: at release settings a step takes
# ~10 ms per image on an accelerator, so 512 steps report every 16 (a few per second).
DEFAULT_REPORTS = 32

# token -> [listener, last steps_done delivered]. Only listeners inside an active
# :func:`listening` block are here; token 0 is never issued (it means "nobody").
_ROUTES: dict[int, list] = {}
_TOKENS = itertools.count(1)
_LOCK = threading.Lock()


def report_every(steps: int, every: int | None = None) -> int:
    """Steps per report: ``every``, or ``ceil(steps / DEFAULT_REPORTS)``."""
    if every is not None:
        if every < 1:
            raise ValueError(f"progress every {every} steps: must be >= 1")
        return int(every)
    return max(1, math.ceil(steps / DEFAULT_REPORTS))


def _deliver(token, steps_done, running, after) -> None:
    # Called from the compiled loop, sometimes several times for one window (the batch
    # split over devices, or a vmapped loop with a batched stop flag): deliver each
    # steps_done once per token.
    if not np.any(running):
        return
    token, done = int(token), int(np.max(steps_done))
    with _LOCK:
        route = _ROUTES.get(token)
        if route is None or route[1] == done:
            return
        route[1] = done
    route[0](done)


def report(token, steps_done, after, running=True) -> None:
    """Inside a compiled loop: tell the listener of ``token`` that ``steps_done`` steps
    of the current run are done (only while ``running``). ``after`` is a value those
    steps computed: the report waits for it (without it the compiler may move the
    callback anywhere, even before the steps)."""
    jax.debug.callback(_deliver, token, steps_done, running, after)


@contextlib.contextmanager
def listening(listener: Callable[[int], None] | None):
    """Routes a loop's reports to ``listener(steps_done)`` for the block; yields the
    token to pass to the loop (0 and no routing for ``None``)."""
    if listener is None:
        yield 0
        return
    with _LOCK:
        token = next(_TOKENS)
        _ROUTES[token] = [listener, None]
    try:
        yield token
    finally:
        jax.effects_barrier()  # deliver the reports still in flight before detaching
        with _LOCK:
            _ROUTES.pop(token, None)


def reset(token: int) -> None:
    """A new run starts (a retry): the next report of any steps_done is delivered."""
    with _LOCK:
        if token in _ROUTES:
            _ROUTES[token][1] = None


def increments(update: Callable[[int], None],
               new_run: Callable[[], None] | None = None) -> Callable[[int], None]:
    """A listener for progress bars: ``update(n)`` with the steps done since the last
    report. A report below the previous one starts a new run (a retry round, the next
    batch): ``new_run()`` is called first (e.g. to grow the bar's total).

    >>> seen = []
    >>> listener = increments(seen.append)
    >>> for done in (16, 32, 16, 32):
    ...     listener(done)
    >>> seen
    [16, 16, 16, 16]
    """
    last = [0]

    def listener(done: int) -> None:
        if done <= last[0]:
            last[0] = 0
            if new_run is not None:
                new_run()
        update(done - last[0])
        last[0] = done

    return listener
