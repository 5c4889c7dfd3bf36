"""CLIP score: how well the explanation's words describe the input image, judged by CLIP.

For an image ``x`` and its explanation (concepts ranked best first), with the CLIP image
embedding ``v = CLIP_img(x)`` and the CLIP text embeddings ``t_i = CLIP_txt(concept_i)``:

    clip_top1 = cos(v, t_1)
    clip_topk = (1 / K) sum_{i <= K} cos(v, t_i)

This is the paper's "CLIP score" evaluation (TEXTER, ImageNet-1k: 0.3113; Pascal VOC
semantic consistency: 0.234). The paper's exact text prompt and top-k cannot be
recovered here, so ours is stated in full: the bare concept string (no "a photo of"
template, as stage 3 embeds it), raw cosine (no x100, no CLIPScore-style
``2.5 * max(cos, 0)`` of Hessel et al. 2021), CLIP preprocessing of the input
(shortest side resized bicubic to the CLIP input size, centre crop).
"""

from __future__ import annotations

import jax.numpy as jnp

from texter_jax.mapping import l2_normalize
from texter_jax.types import Array


def clip_scores(image_emb: Array, text_emb: Array, mask: Array | None = None
                ) -> tuple[Array, Array]:
    """Cosine of each image with the top-1 and the top-K concepts of its explanation.

    Args:
      image_emb: float [B, E] CLIP image embeddings (any norm).
      text_emb: float [B, K, E] CLIP text embeddings of each image's top-K concepts,
        best first (any norm).
      mask: optional bool [B, K]; False marks padding slots (a bank with fewer than K
        concepts). Slot 0 must be valid for ``top1`` to be defined.

    Returns:
      ``(top1, topk_mean)``, float32 [B] each; NaN where no slot is valid.

    >>> import jax.numpy as jnp
    >>> v = jnp.array([[1.0, 0.0]]); t = jnp.array([[[2.0, 0.0], [0.0, 1.0]]])
    >>> [x.tolist() for x in clip_scores(v, t)]
    [[1.0], [0.5]]
    """
    if image_emb.ndim != 2 or text_emb.ndim != 3 or text_emb.shape[0] != image_emb.shape[0] \
            or text_emb.shape[-1] != image_emb.shape[-1]:
        raise ValueError(f"clip_scores: image_emb {image_emb.shape} must be [B, E] and "
                         f"text_emb {text_emb.shape} [B, K, E]")
    cos = jnp.einsum("be,bke->bk", l2_normalize(image_emb), l2_normalize(text_emb))
    if mask is None:
        mask = jnp.ones(cos.shape, bool)
    n = mask.sum(axis=1)
    top1 = jnp.where(mask[:, 0], cos[:, 0], jnp.nan)
    mean = jnp.where(n > 0, jnp.sum(jnp.where(mask, cos, 0.0), axis=1) / jnp.maximum(n, 1),
                     jnp.nan)
    return top1, mean
