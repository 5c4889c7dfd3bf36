"""The release's "all-zero transparency" rule around batched MACO, kept on device.

The release (``texter.py:identify_influential_concepts``) loops: run MACO with the top
``k`` units; if the accumulated map's max is 0 (no selected unit ever had a gradient,
e.g. TopK SAE codes that never enter the top k), set ``k += 1``, capped at the number
of ranked units, and run again from a fresh random phase. Here the images that need a
retry are re-run together. Everything stays on the devices, split along the batch; the
host reads one [B] "retry?" mask per round (the only thing it decides with).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from texter_jax.batching import Placement, host_read, local_placement
from texter_jax.config import MacoConfig
from texter_jax.emphasis.render import MacoResult, maco_batch
from texter_jax.types import Array, PRNGKey


class RetryInfo(NamedTuple):
    """Record of :func:`maco_batch_with_retry`.

    n_units: int32 [B] device array, units finally used per image.
    retries: int [B] host array, extra runs per image.
    failed: bool [B] host array, transparency still all zero after ``max_retries``.
    """

    n_units: Array
    retries: np.ndarray
    failed: np.ndarray


def bucket_size(todo: int, batch: int, n_devices: int) -> int:
    """Rows of a retry round for ``todo`` images: a power of two (few distinct shapes,
    so few compiles), rounded up to a multiple of the device count, at most ``batch``
    (itself a multiple of the device count).

    >>> bucket_size(3, 16, 1), bucket_size(3, 16, 4), bucket_size(5, 16, 4), bucket_size(9, 12, 4)
    (4, 4, 8, 12)
    """
    rows = 1 << int(todo - 1).bit_length()
    return min(batch, -(-rows // n_devices) * n_devices)


@functools.cache
def _programs(placement: Placement):
    batch = placement.batch

    @functools.partial(jax.jit, out_shardings=batch)
    def needs_retry(transparency):
        return jnp.max(transparency, axis=(1, 2, 3)) <= 0

    @functools.partial(jax.jit, out_shardings=batch)
    def take_rows(tree, rows):
        return jax.tree.map(lambda x: x[rows], tree)

    @functools.partial(jax.jit, out_shardings=batch)
    def put_rows(tree, rows, part):
        m = rows.shape[0]
        return jax.tree.map(lambda full, p: full.at[rows].set(p[:m]), tree, part)

    @functools.partial(jax.jit, out_shardings=batch)
    def bump(n, available, todo):
        return jnp.where(todo, jnp.minimum(n + 1, available), n)

    return needs_retry, take_rows, put_rows, bump


def _prefix_mask(n: Array, width: int) -> Array:
    return jnp.arange(width)[None, :] < n[:, None]


def maco_batch_with_retry(objective_fn: Callable, keys: PRNGKey, magnitude,
                          config: MacoConfig, ranked_ids, n_units, ranked_mask=None, *,
                          max_retries: int = 8, placement: Placement | None = None,
                          progress: Callable[[int], None] | None = None,
                          progress_every: int | None = None
                          ) -> tuple[MacoResult, RetryInfo]:
    """:func:`~texter_jax.emphasis.render.maco_batch` plus the release's retry rule.

    Images needing a retry are re-run together in a bucket of :func:`bucket_size` rows
    with keys ``fold_in(keys[b], attempt)``; the release's loop has no bound, ours stops
    after ``max_retries`` and reports it.

    Args:
      objective_fn, keys, magnitude, config: as in :func:`maco_batch`.
      ranked_ids: int [B, R] unit ids best first (R >= the largest k wanted); host or
        device arrays.
      n_units: int or int [B], the k to start with.
      ranked_mask: bool [B, R], valid ranked entries (e.g. fewer active units than R);
        None means all valid. Must be a prefix per row.
      max_retries: cap on extra runs per image.
      placement: the devices the batch is split over (default: this process's; B must
        be a multiple of their count).
      progress, progress_every: as in :func:`maco_batch` (each run reports anew).

    Returns:
      (MacoResult with a leading [B] axis, split over the devices, :class:`RetryInfo`).
    """
    placement = placement or local_placement()
    needs_retry, take_rows, put_rows, bump = _programs(placement)
    ids = placement.put_batch(jnp.asarray(ranked_ids, jnp.int32))
    batch, width = ids.shape
    valid = (jnp.ones((batch, width), bool) if ranked_mask is None
             else jnp.asarray(ranked_mask, bool))
    valid = placement.put_batch(valid)
    available = jnp.sum(valid, axis=1, dtype=jnp.int32)
    n = jnp.minimum(jnp.broadcast_to(jnp.asarray(n_units, jnp.int32), (batch,)), available)
    n = placement.put_batch(n)
    if host_read(jnp.any(n < 1)):
        raise ValueError("every image needs at least one valid unit")
    keys = placement.put_batch(keys)
    run = functools.partial(maco_batch, objective_fn, magnitude=magnitude, config=config,
                            placement=placement, progress=progress,
                            progress_every=progress_every)
    result = run(keys, unit_ids=ids, unit_mask=_prefix_mask(n, width))
    retries = np.zeros(batch, np.int64)
    failed = np.zeros(batch, bool)
    for attempt in range(1, max_retries + 2):
        todo_dev = needs_retry(result.transparency)
        todo = np.flatnonzero(host_read(todo_dev))
        if todo.size == 0 or attempt > max_retries:
            failed[todo] = True
            break
        n = bump(n, available, todo_dev)
        retries[todo] += 1
        bucket = bucket_size(todo.size, batch, placement.n_devices)
        rows = np.concatenate([todo, np.full(bucket - todo.size, todo[0])]).astype(np.int32)
        sub_keys, sub_ids, sub_n = take_rows((keys, ids, n), rows)
        sub_keys = jax.vmap(lambda k, a=attempt: jax.random.fold_in(k, a))(sub_keys)
        redo = run(sub_keys, unit_ids=sub_ids, unit_mask=_prefix_mask(sub_n, width))
        result = put_rows(result, todo.astype(np.int32), redo)
    return result, RetryInfo(n, retries, failed)
