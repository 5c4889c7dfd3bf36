"""Concept directions in the classifier's feature space, pulled back through the aligner.

The aligner maps features to CLIP image space, ``h = W z + b`` (W [E, D]). A concept's
CLIP text embedding ``t`` names a *direction* in CLIP space; its feature-space
counterpart is a displacement ``dz`` with ``W dz = t``:

* ``"pinv"`` (default): ``dz = W^+ t``, the Moore-Penrose pseudo-inverse. When
  E <= D and W has full row rank (ResNet-50: 512 x 2048) it is the smallest feature
  displacement that moves the aligned embedding by exactly ``t``; otherwise the
  least-squares best one.
* ``"transpose"``: ``dz = W^T t``, the gradient of ``<h, t>`` w.r.t. ``z``: the feature
  direction that increases the aligned embedding's agreement with ``t`` fastest.

Bias: directions are displacements, so ``b`` cancels (``W (z + dz) + b - (W z + b) = W dz``)
and is never used. Mapping a CLIP *point* back (``W^+ (s t - b)``) would need a scale ``s``
that cosine retrieval never fixes; we avoid it.

Centring: CLIP text embeddings share a large common component (the "modality gap",
Liang et al. 2022, arXiv 2203.02053), so raw ``t`` of different concepts point almost the
same way. With ``center`` (the runner passes the mean normalised embedding of the image's
concept bank) each concept is taken relative to the bank: ``t_hat - mean``, which keeps
what distinguishes it. Ours; the paper states no such protocol.
"""

from __future__ import annotations

import jax.numpy as jnp

from texter_jax.mapping import l2_normalize
from texter_jax.types import Array

PULLBACKS = ("pinv", "transpose")


def aligner_pullback(w: Array, method: str = "pinv") -> Array:
    """The linear map from CLIP space back to feature space.

    Args:
      w: float [E, D], the aligner's W (``h = z W^T + b`` in row form).
      method: ``"pinv"`` or ``"transpose"`` (see module docstring).

    Returns:
      float32 [D, E].
    """
    w = jnp.asarray(w, jnp.float32)
    if w.ndim != 2:
        raise ValueError(f"aligner W must be [E, D], got {w.shape}")
    if method == "pinv":
        return jnp.linalg.pinv(w)
    if method == "transpose":
        return w.T
    raise ValueError(f"unknown pullback {method!r}; choose one of {PULLBACKS}")


def feature_directions(pullback: Array, text_emb: Array, center: Array | None = None) -> Array:
    """Unit feature-space directions of concepts.

    Args:
      pullback: float [D, E] from :func:`aligner_pullback`.
      text_emb: float [..., E] CLIP text embeddings (any norm; L2-normalised here).
      center: optional float [E] or broadcastable to ``text_emb`` (e.g. [B, 1, E]):
        subtracted from the normalised embeddings before pulling back.

    Returns:
      float32 [..., D], unit norm (a zero pull-back stays zero).

    >>> import jax.numpy as jnp, numpy as np
    >>> p = aligner_pullback(jnp.array([[2.0, 0.0], [0.0, 1.0]]))  # W = diag(2, 1)
    >>> np.asarray(feature_directions(p, jnp.array([[1.0, 1.0]])), float).round(4).tolist()
    [[0.4472, 0.8944]]
    """
    t = l2_normalize(jnp.asarray(text_emb, jnp.float32))
    if center is not None:
        t = t - center
    return l2_normalize(t @ pullback.T)
