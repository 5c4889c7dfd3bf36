"""Differentiable random square crops of the canvas, resized to the model input.

Boxes are ``(cy, cx, side)`` in fractions of the canvas side. The release
(``src/horama/common.py:optimization_step``) draws, per crop, ``cx, cy ~ N(0.5, 0.15)``
and one side ``u * (b1 - b0) + b1`` with ``u ~ U[0, 1)`` and ``box_size=(0.20, 0.25)``,
i.e. a side uniform in [0.25, 0.30] (it adds the *upper* bound). Boxes are not clipped
there, so a box may overhang the canvas; ``roi_align`` reads zeros outside. The
stage-3 crops (``src/horama/utils.py:preprocess_for_maco_image``) clamp each box
inside the canvas instead; ``clip=True`` gives that.

Resizing: each output pixel is a bilinear (triangle-kernel) average of canvas pixels,
with the kernel widened by the downsampling factor (antialiasing). The weights are
exactly those of ``jax.image.scale_and_translate(..., method='linear',
antialias=True)``: samples more than half a pixel off the canvas are 0 and kernels
cut by the edge are renormalised. Instead of a dense [out, S] weight matrix per axis,
each crop reads a fixed-size window of the canvas (``lax.dynamic_slice`` with traced
start, static size), so the cost is set by the largest possible box, not the canvas.
The release instead takes ``roi_align`` at twice the input size (one bilinear point
sample per bin, half-pixel offset since ``aligned=False``) and then an antialiased
bicubic resize to the input size; the two differ by a smoothing kernel of about one
output pixel.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from texter_jax.types import Array, PRNGKey


def sample_boxes(key: PRNGKey, n: int, *, centre_std: float = 0.15,
                 side_range: tuple[float, float] = (0.25, 0.30),
                 clip: bool = False) -> Array:
    """Random square boxes, float32 [n, 3] of (cy, cx, side) in canvas fractions.

    Args:
      key: PRNG key.
      n: number of boxes.
      centre_std: standard deviation of the centre around 0.5, per axis.
      side_range: (low, high) of the uniform side (the release's effective range).
      clip: shift each box inside [0, 1] (stage-3 behaviour); the MACO loop does not.
    """
    k_x, k_y, k_s = jax.random.split(key, 3)
    cx = 0.5 + centre_std * jax.random.normal(k_x, (n,))
    cy = 0.5 + centre_std * jax.random.normal(k_y, (n,))
    lo, hi = side_range
    side = lo + (hi - lo) * jax.random.uniform(k_s, (n,))
    if clip:
        # Same as the release's clamp of (x_min, x_max) to [0, 1 - side], [side, 1].
        half = 0.5 * side
        cx = jnp.clip(cx, half, 1.0 - half)
        cy = jnp.clip(cy, half, 1.0 - half)
    return jnp.stack([cy, cx, side], axis=-1).astype(jnp.float32)


def _margin(max_side_px: float, out_size: int) -> int:
    # Kernel half-width in canvas pixels (1 when upsampling, side/out when
    # downsampling) plus 2 so every tap with non-zero weight lies in the window.
    return int(math.ceil(max(max_side_px / out_size, 1.0))) + 2


def _axis_weights(start: Array, size: Array, canvas: int, out_size: int,
                  window_start: Array, window: int) -> Array:
    """Resampling weights [out_size, window] for one axis of one box.

    ``start``/``size`` are in canvas pixels (edge coordinates, pixel i spans [i, i+1)).
    """
    inv_scale = size / out_size
    kernel_scale = jnp.maximum(inv_scale, 1.0)
    # Input index (pixel-centre coordinates) under each output pixel centre.
    sample = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * inv_scale + start - 0.5
    idx = window_start + jnp.arange(window, dtype=jnp.float32)
    w = jnp.maximum(0.0, 1.0 - jnp.abs(sample[:, None] - idx[None, :]) / kernel_scale)
    total = jnp.sum(w, axis=1, keepdims=True)
    w = jnp.where(total > 1000.0 * jnp.finfo(jnp.float32).eps,
                  w / jnp.where(total != 0, total, 1.0), 0.0)
    inside = (sample >= -0.5) & (sample <= canvas - 0.5)
    return jnp.where(inside[:, None], w, 0.0)


def crop_and_resize(image: Array, boxes: Array, out_size: int, *,
                    max_side: float | None = None) -> Array:
    """Crops square boxes out of one image and resizes each to ``out_size``.

    Differentiable w.r.t. ``image`` (linear in it); shapes are static whatever the boxes.

    Args:
      image: float [S, S, C], the canvas.
      boxes: float [n, 3] of (cy, cx, side) in canvas fractions.
      out_size: side of each output crop.
      max_side: static upper bound on ``side`` (fraction). Each crop then reads a
        window of ``ceil(max_side * S) + margin`` pixels instead of the whole canvas.
        ``None`` reads the whole canvas. A box larger than the bound gives wrong
        pixels, so pass the sampler's upper bound.

    Returns:
      float [n, out_size, out_size, C], the dtype of ``image``.
    """
    if image.ndim != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"image must be a square [S, S, C] canvas, got {image.shape}")
    if boxes.ndim != 2 or boxes.shape[1] != 3:
        raise ValueError(f"boxes must be [n, 3] (cy, cx, side), got {boxes.shape}")
    canvas, channels = image.shape[0], image.shape[2]
    if max_side is None:
        window = canvas
    else:
        margin = _margin(max_side * canvas, out_size)
        window = min(canvas, int(math.ceil(max_side * canvas)) + 2 * margin)
    boxes = boxes.astype(jnp.float32)
    size = boxes[:, 2] * canvas
    y0 = boxes[:, 0] * canvas - 0.5 * size
    x0 = boxes[:, 1] * canvas - 0.5 * size
    if window == canvas:
        ws_y = ws_x = jnp.zeros_like(y0)
    else:
        margin = _margin(max_side * canvas, out_size)
        hi = float(canvas - window)
        ws_y = jnp.clip(jnp.floor(y0) - margin, 0.0, hi)
        ws_x = jnp.clip(jnp.floor(x0) - margin, 0.0, hi)
    weights = jax.vmap(_axis_weights, in_axes=(0, 0, None, None, 0, None))
    wy = weights(y0, size, canvas, out_size, ws_y, window).astype(image.dtype)
    wx = weights(x0, size, canvas, out_size, ws_x, window).astype(image.dtype)

    def one(wy1, wx1, sy, sx):
        if window == canvas:
            patch = image
        else:
            patch = jax.lax.dynamic_slice(
                image, (sy.astype(jnp.int32), sx.astype(jnp.int32), 0),
                (window, window, channels))
        rows = jnp.einsum("oh,hwc->owc", wy1, patch)
        return jnp.einsum("owc,pw->opc", rows, wx1)

    return jax.vmap(one)(wy, wx, ws_y, ws_x)


def add_noise(key: PRNGKey, images: Array, level: float) -> Array:
    """images + N(0, level^2) + U(-level/2, level/2), the release's order and scales.

    No clipping afterwards, as in the release: the objective may see values just
    outside [0, 1].
    """
    k_n, k_u = jax.random.split(key)
    images = images + level * jax.random.normal(k_n, images.shape, images.dtype)
    return images + level * (jax.random.uniform(k_u, images.shape, images.dtype) - 0.5)


def random_crops(key: PRNGKey, image: Array, n: int, out_size: int, *,
                 centre_std: float = 0.15,
                 side_range: tuple[float, float] = (0.25, 0.30),
                 noise: float = 0.05, clip: bool = False) -> Array:
    """``n`` noisy random crops of ``image`` [S, S, C] -> [n, out_size, out_size, C]."""
    boxes = random_crop_boxes(key, n, centre_std=centre_std, side_range=side_range,
                              clip=clip)
    crops = crop_and_resize(image, boxes, out_size, max_side=side_range[1])
    return add_noise(jax.random.split(key)[1], crops, noise) if noise > 0 else crops


def random_crop_boxes(key: PRNGKey, n: int, *, centre_std: float = 0.15,
                      side_range: tuple[float, float] = (0.25, 0.30),
                      clip: bool = False) -> Array:
    """The boxes :func:`random_crops` cuts with the same key and settings, float32 [n, 3]
    of (cy, cx, side) in canvas fractions."""
    return sample_boxes(jax.random.split(key)[0], n, centre_std=centre_std,
                        side_range=side_range, clip=clip)
