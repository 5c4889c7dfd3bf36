"""Percentile bootstrap confidence intervals, batched over metrics, with an explicit key.

For N per-image values of a metric, draw ``n_boot`` resamples of size N with
replacement, take each resample's mean, and report the ``(1 - level) / 2`` and
``(1 + level) / 2`` quantiles of those means (Efron's percentile interval). Missing
values (NaN, or ``mask`` False) are left out of each resample's mean, so metrics defined
on different subsets of the images share one set of resample indices (a paired
bootstrap across metrics). ``texter_jax.world.scoring.bootstrap_ci`` is the same
interval in numpy for one metric; this one is JAX, batched and NaN-aware.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from texter_jax.types import Array, PRNGKey


def bootstrap_ci(key: PRNGKey, values: Array, mask: Array | None = None, *,
                 n_boot: int = 2000, level: float = 0.95,
                 size: Array | None = None) -> tuple[Array, Array, Array]:
    """Mean and percentile-bootstrap CI of each metric.

    Args:
      key: PRNG key (the resample indices derive from it alone).
      values: float [N] or [M, N]: M metrics over the same N images.
      mask: optional bool, same shape; False (or a NaN value) = missing.
      n_boot: number of resamples.
      level: coverage of the interval, e.g. 0.95.
      size: optional int scalar n <= N (may be traced): only the first n columns are the
        sample, the rest is padding, so one compiled program serves every n up to N.

    Returns:
      ``(mean, low, high)``, float32 [] or [M]; NaN for a metric with no valid value.

    >>> import jax
    >>> m, lo, hi = bootstrap_ci(jax.random.key(0), jax.numpy.array([1.0, 1.0, 1.0]))
    >>> float(m), float(lo), float(hi)
    (1.0, 1.0, 1.0)
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = jnp.asarray(values, jnp.float32)
    single = x.ndim == 1
    if single:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"values must be [N] or [M, N], got {x.shape}")
    width = x.shape[1]
    if width == 0:
        nan = jnp.full(x.shape[0], jnp.nan)
        return (nan[0], nan[0], nan[0]) if single else (nan, nan, nan)
    n = width if size is None else jnp.asarray(size, jnp.int32)
    in_sample = (jnp.arange(width) < n)[None, :]
    valid = ~jnp.isnan(x) & in_sample
    if mask is not None:
        valid = valid & jnp.asarray(mask, bool).reshape(x.shape)
    x = jnp.where(valid, x, 0.0)
    # Resample positions j < n draw uniformly from the first n columns; padding
    # positions (j >= n) carry weight 0, so every resample has exactly n draws.
    u = jax.random.uniform(key, (n_boot, width))
    idx = jnp.minimum(jnp.floor(u * n).astype(jnp.int32), n - 1)
    draw = in_sample
    alpha = (1.0 - level) / 2

    def one(row, ok):
        s = (row[idx] * draw).sum(axis=1)
        c = (ok[idx] & draw).sum(axis=1)
        means = jnp.where(c > 0, s / jnp.maximum(c, 1), jnp.nan)
        lo, hi = jnp.nanquantile(means, jnp.array([alpha, 1 - alpha]))
        total = ok.sum()
        est = jnp.where(total > 0, row.sum() / jnp.maximum(total, 1), jnp.nan)
        return est, lo, hi

    est, lo, hi = jax.lax.map(lambda a: one(*a), (x, valid))
    return (est[0], lo[0], hi[0]) if single else (est, lo, hi)


def bootstrap_table(values: dict[str, np.ndarray], *, seed: int, n_boot: int = 2000,
                    level: float = 0.95) -> dict[str, tuple[int, float, float, float]]:
    """Host convenience: ``{metric: float [N] with NaN = missing}`` ->
    ``{metric: (n_valid, mean, low, high)}`` from one key ``jax.random.key(seed)``."""
    names = list(values)
    if not names:
        return {}
    arr = np.stack([np.asarray(values[k], np.float64) for k in names]).astype(np.float32)
    m, n = arr.shape
    # Pad to bucketed shapes (metrics to a multiple of 8, images to a power of two) so
    # tables of many (method, subset) groups share a few compiled programs.
    padded = np.full((-(-m // 8) * 8, max(16, 1 << max(n - 1, 0).bit_length())), np.nan,
                     np.float32)
    padded[:m, :n] = arr
    est, lo, hi = _bootstrap_jit(jax.random.key(seed), padded, n_boot=n_boot, level=level,
                                 size=n)
    est, lo, hi = np.asarray(est)[:m], np.asarray(lo)[:m], np.asarray(hi)[:m]
    counts = (~np.isnan(arr)).sum(axis=1)
    return {k: (int(counts[i]), float(est[i]), float(lo[i]), float(hi[i]))
            for i, k in enumerate(names)}


# jit at the edge for the host convenience (one compile per table shape).
_bootstrap_jit = jax.jit(bootstrap_ci, static_argnames=("n_boot", "level"))
