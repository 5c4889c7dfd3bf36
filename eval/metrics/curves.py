"""Insertion and deletion curves in feature space along an explanation's concepts.

Take the explanation's top-K concepts as unit feature directions ``u_1..u_K``
(:mod:`texter_jax.eval.metrics.directions`), best first, and orthonormalise them in that order by
Gram-Schmidt (``q_1..q_K``; a direction already in the span of the earlier ones adds
nothing). With the image's features ``z``, a baseline feature ``z0`` and the explained
class ``c``, let ``a_i = <z - z0, q_i>`` (the image's component along ``q_i``):

* insertion: ``z^ins_j = z0 + sum_{i <= j} a_i q_i`` -- start from the baseline and add
  the image's components along the concepts, one concept at a time;
* deletion:  ``z^del_j = z  - sum_{i <= j} a_i q_i`` -- start from the image and move its
  components along the concepts to the baseline, one at a time;

for ``j = 0..K``; each curve is ``p_c(z_j) = softmax(head(z_j))_c`` and its score the
area under it over ``x = j / K`` in [0, 1] (trapezoid rule). A faithful explanation
recovers the class probability quickly on insertion (high AUC) and destroys it quickly
on deletion (low AUC). Orthonormalising makes removal well defined (components are
never removed twice) and makes the curves exact at the ends: with a full basis of the
feature space (K = D) insertion ends at ``z`` (the image's logits) and deletion at
``z0`` (with ``z0 = 0``: the head's bias alone).

Baseline ``z0``: zeros (default; a linear head then gives its bias) or the dataset mean
of the features (``--baseline mean``). Ours, in feature space: the paper's "insertion
score" (0.204; 0.159 on a 1,000-image sample) follows a protocol that cannot be
recovered here and need not be this one.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from texter_jax.types import Array

# A direction whose residual after projecting out the earlier ones is below this
# fraction of its own norm is treated as dependent and dropped.
DEPENDENCE_TOL = 1e-5


def orthonormalize(directions: Array, mask: Array | None = None, *,
                   tol: float = DEPENDENCE_TOL) -> tuple[Array, Array]:
    """Gram-Schmidt in order, batched: ``[B, K, D] -> (q [B, K, D], kept bool [B, K])``.

    Classical Gram-Schmidt applied twice per vector ("CGS2"), as accurate as the
    modified form. Masked-out or dependent directions give ``q = 0`` and ``kept = False``.

    >>> import jax.numpy as jnp, numpy as np
    >>> q, kept = orthonormalize(jnp.array([[[1.0, 1.0], [1.0, 0.0], [0.0, 2.0]]]))
    >>> np.asarray(q, float).round(4).tolist(), kept.tolist()
    ([[[0.7071, 0.7071], [0.7071, -0.7071], [0.0, 0.0]]], [[True, True, False]])
    """
    if directions.ndim != 3:
        raise ValueError(f"directions must be [B, K, D], got {directions.shape}")
    b, k, d = directions.shape
    u = jnp.asarray(directions, jnp.float32)
    if mask is None:
        mask = jnp.ones((b, k), bool)

    def step(q, j):
        v = u[:, j]
        norm0 = jnp.linalg.norm(v, axis=-1)
        for _ in range(2):
            v = v - jnp.einsum("bk,bkd->bd", jnp.einsum("bkd,bd->bk", q, v), q)
        norm = jnp.linalg.norm(v, axis=-1)
        keep = mask[:, j] & (norm > tol * jnp.maximum(norm0, 1e-30)) & (norm0 > 0)
        qj = jnp.where(keep[:, None], v / jnp.maximum(norm, 1e-30)[:, None], 0.0)
        return q.at[:, j].set(qj), keep

    q, kept = jax.lax.scan(step, jnp.zeros((b, k, d), jnp.float32), jnp.arange(k))
    return q, kept.T


def curve_points(z: Array, directions: Array, baseline: Array | None = None,
                 mask: Array | None = None, *, mode: str) -> Array:
    """Feature vectors along the insertion or deletion path.

    Args:
      z: float [B, D] image features.
      directions: float [B, K, D] concept directions, best first.
      baseline: float [D] or [B, D] (default zeros).
      mask: optional bool [B, K], False for padding slots.
      mode: ``"insertion"`` or ``"deletion"``.

    Returns:
      float32 [B, K + 1, D]; point ``j`` has the first ``j`` concepts inserted / deleted.
    """
    if mode not in ("insertion", "deletion"):
        raise ValueError(f"mode must be 'insertion' or 'deletion', got {mode!r}")
    z = jnp.asarray(z, jnp.float32)
    z0 = jnp.zeros_like(z) if baseline is None else jnp.broadcast_to(baseline, z.shape)
    q, _ = orthonormalize(directions, mask)
    coeff = jnp.einsum("bkd,bd->bk", q, z - z0)
    cum = jnp.cumsum(coeff[..., None] * q, axis=1)  # [B, K, D]
    cum = jnp.concatenate([jnp.zeros_like(z)[:, None], cum], axis=1)
    return z0[:, None] + cum if mode == "insertion" else z[:, None] - cum


def class_curve(head_fn: Callable[[Array], Array], points: Array, class_idx: Array, *,
                output: str = "prob") -> Array:
    """``softmax(head(points))_c`` (or the logit) along a path.

    Args:
      head_fn: features [N, D] -> logits [N, C].
      points: float [B, J, D]; class_idx: int [B].
      output: ``"prob"`` or ``"logit"``.

    Returns:
      float32 [B, J].
    """
    b, j, d = points.shape
    logits = head_fn(points.reshape(b * j, d)).reshape(b, j, -1)
    if output == "prob":
        logits = jax.nn.softmax(logits, axis=-1)
    elif output != "logit":
        raise ValueError(f"output must be 'prob' or 'logit', got {output!r}")
    idx = jnp.broadcast_to(jnp.asarray(class_idx, jnp.int32)[:, None, None], (b, j, 1))
    return jnp.take_along_axis(logits, idx, axis=-1)[..., 0]


def insertion_curve(head_fn, z, class_idx, directions, baseline=None, mask=None, *,
                    output: str = "prob") -> Array:
    """Class probability as concepts are inserted into the baseline: float32 [B, K + 1]."""
    pts = curve_points(z, directions, baseline, mask, mode="insertion")
    return class_curve(head_fn, pts, class_idx, output=output)


def deletion_curve(head_fn, z, class_idx, directions, baseline=None, mask=None, *,
                   output: str = "prob") -> Array:
    """Class probability as concepts are deleted from the image: float32 [B, K + 1]."""
    pts = curve_points(z, directions, baseline, mask, mode="deletion")
    return class_curve(head_fn, pts, class_idx, output=output)


def curve_auc(curve: Array) -> Array:
    """Trapezoid area under ``[..., J]`` values at ``x = 0, 1/(J-1), ..., 1``: ``[...]``.

    >>> import jax.numpy as jnp
    >>> curve_auc(jnp.array([0.0, 0.5, 1.0])).tolist()
    0.5
    """
    j = curve.shape[-1]
    if j < 2:
        raise ValueError("a curve needs at least 2 points")
    return (jnp.sum(curve, axis=-1) - 0.5 * (curve[..., 0] + curve[..., -1])) / (j - 1)
