"""CLIP image preprocessing in JAX: shortest side resized (bicubic), then centre crop."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from texter_jax.types import Array


def _resized_size(h: int, w: int, size: int) -> tuple[int, int]:
    """Shortest side -> ``size``, the other scaled and truncated (torchvision Resize(int))."""
    if w <= h:
        return int(size * h / w), size
    return size, int(size * w / h)


def preprocess_images(images: Array, size: int) -> Array:
    """CLIP preprocessing in JAX: resize shortest side to ``size`` (bicubic), centre crop.

    Follows OpenAI CLIP's torchvision pipeline (``Resize(size, BICUBIC)`` then
    ``CenterCrop(size)``, crop offsets rounded as torchvision does). It *approximates*
    PIL's bicubic: ``jax.image.resize`` uses the same Keys kernel (a = -0.5) with
    antialiasing when shrinking, but works in float and does not round to uint8, so
    pixels differ from PIL's by up to about one grey level. Values are clipped back to
    [0, 1] because bicubic overshoots.

    Args:
      images: float32 [B, H, W, 3], NHWC, in [0, 1] (one size for the whole batch).
      size: output side S (the model's ``image_size``).

    Returns:
      float32 [B, S, S, 3] in [0, 1].
    """
    chex.assert_rank(images, 4)
    b, h, w, ch = images.shape
    new_h, new_w = _resized_size(h, w, size)
    if (new_h, new_w) != (h, w):
        images = jax.image.resize(images, (b, new_h, new_w, ch), method="bicubic",
                                  antialias=True)
        images = jnp.clip(images, 0.0, 1.0)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return images[:, top:top + size, left:left + size, :]
