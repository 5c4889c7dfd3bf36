"""Spearman rank correlation between two scorings of the same concepts.

Used by the sanity checks (Adebayo et al. 2018, "Sanity Checks for Saliency Maps",
arXiv 1810.03292): the real explanation's concept scores are compared with those of an
explanation of a randomised model, or of randomly chosen units. A method that depends on
the model gives a low correlation; a value near 1 means the explanation did not notice
the model changed. Spearman's rho is the Pearson correlation of the average ranks (ties
share the mean of their ranks, as ``scipy.stats.spearmanr``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from texter_jax.types import Array


def rankdata(x: Array, mask: Array | None = None) -> Array:
    """Average ranks (1 = smallest) per row among the valid entries.

    Args:
      x: float [B, T]; mask: optional bool [B, T] (False = padding).

    Returns:
      float32 [B, T]; masked entries get 0.

    >>> import jax.numpy as jnp
    >>> rankdata(jnp.array([[3.0, 1.0, 3.0, 2.0]])).tolist()
    [[3.5, 1.0, 3.5, 2.0]]
    """
    x = jnp.asarray(x, jnp.float32)
    if mask is None:
        mask = jnp.ones(x.shape, bool)
    # Padding sorts last, so the valid entries' ranks are those among valid entries.
    v = jnp.where(mask, x, jnp.inf)
    s = jnp.sort(v, axis=-1)

    def row(sorted_row, vals):
        lo = jnp.searchsorted(sorted_row, vals, side="left")
        hi = jnp.searchsorted(sorted_row, vals, side="right")
        return (lo + hi + 1) / 2.0

    r = jax.vmap(row)(s, v)
    return jnp.where(mask, r, 0.0).astype(jnp.float32)


def spearman(a: Array, b: Array, mask: Array | None = None) -> Array:
    """Spearman's rho per row.

    Args:
      a, b: float [B, T] two scorings of the same T items.
      mask: optional bool [B, T] of valid items.

    Returns:
      float32 [B] in [-1, 1]; NaN where a row has fewer than 2 valid items or either
      scoring is constant.

    >>> import jax.numpy as jnp
    >>> x = jnp.array([[0.1, 0.5, 0.3]])
    >>> spearman(x, x).tolist(), spearman(x, -x).tolist()
    ([1.0], [-1.0])
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"spearman: a {a.shape} and b {b.shape} must both be [B, T]")
    if mask is None:
        mask = jnp.ones(a.shape, bool)
    m = mask.astype(jnp.float32)
    n = m.sum(axis=1, keepdims=True)
    ra, rb = rankdata(a, mask), rankdata(b, mask)
    mean = (n + 1) / 2  # mean of ranks 1..n, ties included
    da, db = (ra - mean) * m, (rb - mean) * m
    cov = jnp.sum(da * db, axis=1)
    var = jnp.sqrt(jnp.sum(da * da, axis=1) * jnp.sum(db * db, axis=1))
    ok = (n[:, 0] >= 2) & (var > 0)
    return jnp.where(ok, cov / jnp.where(ok, var, 1.0), jnp.nan)
