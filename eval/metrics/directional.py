"""Directional derivative of the class logit along a concept's feature direction.

For features ``z``, the explained class ``c`` (the predicted one, as TEXTER explains) and
a unit feature direction ``u`` of a concept (:mod:`texter_jax.eval.metrics.directions`):

    D_u F_c(z) = grad_z F_c(z) . u            (the "directional" score)
    cos_u      = D_u F_c(z) / |grad_z F_c(z)|  in [-1, 1]

By Cauchy-Schwarz ``D_u F_c <= |grad F_c|`` with equality iff ``u`` is the normalised
gradient: the score asks how close the explanation's concept comes to the feature
direction that raises the class logit fastest. The cosine form removes the head's scale
so models can be compared. For a linear head ``grad F_c = w_c`` (the class weight row),
independent of ``z``. Ours: the paper reports a "directional score" (0.723) whose
protocol cannot be recovered here, so the two are not the same measurement.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from texter_jax.types import Array


def class_logit_grad(head_fn: Callable[[Array], Array], z: Array, class_idx: Array) -> Array:
    """``grad_z F_c(z)`` per row.

    Args:
      head_fn: features float [N, D] -> logits [N, C]; rows must not interact (true of
        classifier heads), since the gradient of the summed logits is taken.
      z: float32 [B, D]; class_idx: int [B].

    Returns:
      float32 [B, D].
    """
    idx = jnp.asarray(class_idx, jnp.int32)

    def total(zz):
        return jnp.sum(jnp.take_along_axis(head_fn(zz), idx[:, None], axis=1))

    return jax.grad(total)(z)


def directional_derivatives(head_fn: Callable[[Array], Array], z: Array, class_idx: Array,
                            directions: Array) -> tuple[Array, Array]:
    """Derivative of ``F_c`` along each of K directions, and its cosine form.

    Args:
      head_fn, z, class_idx: as in :func:`class_logit_grad`.
      directions: float [B, K, D]; normalised here (a zero direction scores 0).

    Returns:
      ``(derivative, cosine)``: float32 [B, K] each; the cosine is 0 where the
      gradient vanishes.

    >>> import jax.numpy as jnp, numpy as np
    >>> head = lambda z: z @ jnp.array([[3.0], [4.0]])   # F_0(z) = 3 z0 + 4 z1
    >>> d, c = directional_derivatives(head, jnp.zeros((1, 2)), jnp.array([0]),
    ...                                jnp.array([[[3.0, 4.0], [1.0, 0.0]]]))
    >>> np.asarray(d, float).round(4).tolist(), np.asarray(c, float).round(4).tolist()
    ([[5.0, 3.0]], [[1.0, 0.6]])
    """
    if directions.ndim != 3 or directions.shape[0] != z.shape[0] \
            or directions.shape[-1] != z.shape[-1]:
        raise ValueError(f"directions {directions.shape} must be [B, K, D] for z {z.shape}")
    g = class_logit_grad(head_fn, z, class_idx)
    norm = jnp.linalg.norm(directions, axis=-1, keepdims=True)
    u = directions / jnp.maximum(norm, 1e-12)
    deriv = jnp.einsum("bd,bkd->bk", g, u)
    gnorm = jnp.linalg.norm(g, axis=-1, keepdims=True)
    cos = jnp.where(gnorm > 0, deriv / jnp.maximum(gnorm, 1e-30), 0.0)
    return deriv, cos
