"""Reader controls: canvases whose right reading is known, for TEXTER's stage 3.

Stage 3 reads random 25-30 % crops of a concept canvas through the classifier, the
aligner and CLIP's text side. Before a TEXTER hit rate means anything, that reader must
be able to read canvases that plainly show the truth. Two controls, read through exactly
the same crops:

* :func:`tiled_inputs` - the explained image itself, tiled at crop scale over the canvas
  (each tile the size of a stage-3 crop, the grid at a random offset): every crop shows
  the whole input once, cut across tiles, at the scale the crops read concept images
  (the world's models see such views as mosaics, :mod:`texter_jax.world.mosaics`);
* :func:`value_canvases` - for one value of one attribute, a canvas that shows that
  value, and no other constant value, at the scale the crops see: for a colour or a
  pattern, a grid of close-ups inside objects, a cell per crop (a colour's close-ups carry
  random patterns, a pattern's random colours: a flat field of colour would also show
  the "solid" pattern everywhere); a background's texture with a crop
  spanning about a whole image of it; a grid of objects of one shape (random colours,
  patterns, sizes), spaced so that every crop holds a whole one, as in a wide view; a
  grid of badges of one colour.

:func:`upsampled_inputs` (the input upsampled to the canvas) was the first control (a);
it stays as a diagnostic: a 25-30 % crop of it shows part of the object and misses the
badge, so it cannot pass for shape or badge by construction.

Every canvas is rendered by :mod:`texter_jax.world.generator` from world records, so a
control shows the world as its models learned it; nothing is fitted to concept images.
"""

from __future__ import annotations

import jax
import numpy as np

from texter_jax.world.attributes import (
    DISCRETE,
    SIZE_RADIUS,
    WorldAttrs,
    as_numpy_rng,
    sample_attributes,
)
from texter_jax.world.generator import render
from texter_jax.world.mosaics import Mosaics, mosaic_visible

# Mean side of a stage-3 crop as a fraction of the canvas (release: U[0.25, 0.30]).
CROP_SIDE = 0.275
# Attributes with a value canvas; "size" has none (small / large need a whole scene).
CONTROLLED = ("shape", "colour", "pattern", "background", "badge")


def upsampled_inputs(images: np.ndarray, canvas: int) -> np.ndarray:
    """Images float [N, H, W, 3] in [0, 1] -> float32 [N, canvas, canvas, 3], bilinear."""
    images = np.asarray(images, np.float32)
    n, _, _, c = images.shape
    return np.asarray(jax.image.resize(images, (n, canvas, canvas, c), "linear"))


def tiled_inputs(images: np.ndarray, canvas: int, *, seed,
                 crop_side: float = CROP_SIDE) -> np.ndarray:
    """Each image tiled at stage-3 crop scale over a canvas, the grid at a random offset.

    Each image is resized (bilinear, antialiased) to a tile of ``T = round(crop_side *
    canvas)`` pixels; the canvas is the window ``[oy, oy + S) x [ox, ox + S)`` of an
    endless grid of that tile, with ``(oy, ox)`` uniform in ``[0, T)``. So the canvas is
    periodic with period T along both axes, and a crop of side T shows the whole image
    once, cyclically shifted (cut across up to 2x2 tiles).

    Args:
      images: float [N, H, W, 3] in [0, 1].
      canvas: S, the canvas side in pixels.
      seed: int seed, JAX key or numpy Generator (the offsets).
      crop_side: the crops' mean side as a fraction of the canvas.

    Returns:
      float32 [N, S, S, 3] in [0, 1].
    """
    images = np.asarray(images, np.float32)
    n, _, _, c = images.shape
    t = tile_px(canvas, crop_side)
    tiles = np.clip(np.asarray(jax.image.resize(images, (n, t, t, c), "linear")), 0.0, 1.0)
    offsets = _tile_offsets(n, t, seed)
    reps = -(-canvas // t) + 1  # ceil(S / T) + 1 tiles cover any offset
    out = np.empty((n, canvas, canvas, c), np.float32)
    for i in range(n):
        big = np.tile(tiles[i], (reps, reps, 1))
        oy, ox = offsets[i]
        out[i] = big[oy:oy + canvas, ox:ox + canvas]
    return out


def tile_px(canvas: int, crop_side: float = CROP_SIDE) -> int:
    """The tile side of :func:`tiled_inputs`: a mean stage-3 crop, in pixels."""
    return max(1, int(round(crop_side * canvas)))


def _tile_offsets(n: int, t: int, seed) -> np.ndarray:
    """int64 [N, 2], the grid offsets (row, column) :func:`tiled_inputs` draws."""
    return as_numpy_rng(seed).integers(0, t, (n, 2))


def tiled_crop_visible(attrs: WorldAttrs, canvas: int, boxes: np.ndarray, *, seed,
                       crop_side: float = CROP_SIDE) -> np.ndarray:
    """What each crop of :func:`tiled_inputs` shows by the world's own rules, bool
    [N, C, len(DISCRETE)] (columns in :data:`~texter_jax.world.attributes.DISCRETE` order).

    A crop of a tiled canvas is a window on a grid of copies of one record: a mosaic whose
    tiles all agree, so :func:`~texter_jax.world.mosaics.mosaic_visible` says what it
    shows (the shape only when one copy's object is >= 90 % inside the crop). Measured on
    the crop's own pixels (boxes rounded to whole pixels); the reader then resizes each
    crop to the classifier's input.

    Args:
      attrs: the N records whose images were tiled.
      canvas: S, the canvas side in pixels.
      boxes: float [N, C, 3] of (cy, cx, side) in canvas fractions, the crops read
        (:func:`texter_jax.mapping.crop_boxes` with the reader's keys).
      seed: the seed :func:`tiled_inputs` drew the grid offsets with.
      crop_side: as in :func:`tiled_inputs`.
    """
    boxes = np.asarray(boxes, np.float64)
    n, c = boxes.shape[:2]
    if len(attrs) != n:
        raise ValueError(f"boxes are for {n} canvases, attrs holds {len(attrs)} records")
    t = tile_px(canvas, crop_side)
    offsets = _tile_offsets(n, t, seed)
    side = np.maximum(1, np.rint(boxes[..., 2] * canvas)).astype(np.int64)  # [N, C]
    # canvas pixel p is grid pixel p + offset; the grid repeats every t pixels
    y0 = np.rint(boxes[..., 0] * canvas - 0.5 * side).astype(np.int64) + offsets[:, None, 0]
    x0 = np.rint(boxes[..., 1] * canvas - 0.5 * side).astype(np.int64) + offsets[:, None, 1]
    window = np.stack([y0 % t, x0 % t], axis=-1)  # [N, C, 2]
    per_side = -(-(window.max(-1) + side) // t)
    out = np.zeros((n, c, len(DISCRETE)), bool)
    for s in np.unique(side):
        ii, jj = np.nonzero(side == s)
        k = per_side[ii, jj]
        rows = np.repeat(ii, k * k)
        m = Mosaics(tiles=attrs.take(rows), start=np.concatenate([[0], np.cumsum(k * k)]),
                    per_side=k, tile_px=np.full(len(ii), t, np.int64),
                    offset=window[ii, jj], shared=np.zeros(len(ii), np.int64),
                    image_size=int(s))
        out[ii, jj] = mosaic_visible(m)
    return out


def _off_view(attrs: WorldAttrs, *, objects: bool, badges: bool) -> WorldAttrs:
    # Moves the object and/or the badge far outside every view: the renderer then
    # draws only what remains.
    far = np.full(len(attrs), 50.0, np.float32)
    fields = {}
    if not objects:
        fields.update(x=far, y=far)
    if not badges:
        fields.update(bx=far, by=far)
    return attrs.replace(**fields)


def _grid(cells: np.ndarray, per_side: int, canvas: int, offset: np.ndarray) -> np.ndarray:
    """Tiles [per_side^2, P, P, 3] cells into a canvas, shifted by ``offset`` pixels."""
    rows = [np.concatenate(list(cells[r * per_side:(r + 1) * per_side]), axis=1)
            for r in range(per_side)]
    big = np.concatenate(rows, axis=0)
    oy, ox = int(offset[0]), int(offset[1])
    return big[oy:oy + canvas, ox:ox + canvas]


def value_canvases(attribute: str, value: int | str, n: int, canvas: int, *,
                   seed, crop_side: float = CROP_SIDE) -> np.ndarray:
    """N canvases showing one value of one attribute at stage-3 crop scale.

    Args:
      attribute: one of :data:`CONTROLLED`.
      value: the value (index or name).
      n: canvases to draw (other attributes random per canvas or per grid cell).
      canvas: side S in pixels.
      seed: int seed, JAX key or numpy Generator.
      crop_side: the crops' side as a fraction of the canvas.

    Returns:
      float32 [N, S, S, 3] in [0, 1].
    """
    if attribute not in CONTROLLED:
        raise ValueError(f"no value canvas for {attribute!r}; controlled: {CONTROLLED}")
    table = DISCRETE[attribute]
    v = table.index(value) if isinstance(value, str) and value in table else value
    if isinstance(v, str) or not 0 <= int(v) < len(table):
        raise ValueError(f"{attribute} value {value!r} is not in {table}")
    v = int(v)
    rng = as_numpy_rng(seed)
    crop_px = crop_side * canvas
    out = np.empty((n, canvas, canvas, 3), np.float32)
    for i in range(n):
        s = int(rng.integers(2**31))
        if attribute == "background":  # the texture alone, a crop spanning ~one image
            a = _off_view(sample_attributes(s, 1, constraints={"background": v}),
                          objects=False, badges=False)
            view = np.array([[0.5, 0.5, 1.0 / crop_side]], np.float32)
            out[i] = render(a, s, image_size=canvas, views=view)[0] / np.float32(255)
            continue
        # Grids of cells: cell side P pixels, each cell one centred object / badge, all
        # other attributes (background included) drawn per cell: only the value is
        # constant over the canvas.
        cons = {attribute: v}
        if attribute == "shape":
            cell = 0.6 * crop_px  # a crop always holds a whole object, at wide-view scale
        elif attribute == "badge":
            cell = 0.8 * crop_px  # a crop mostly holds a whole badge, at whole-image scale
        else:  # pattern, colour: close-ups of objects of that value, a cell per crop
            cell = crop_px
        per_side = int(np.ceil(canvas / cell)) + 1
        p = int(round(cell))
        a = sample_attributes(s, per_side * per_side, constraints=cons)
        jitter = (rng.random((2, len(a))) - 0.5) * 0.1
        centre = np.float32(0.5)
        a = a.replace(x=(centre + jitter[0]).astype(np.float32),
                      y=(centre + jitter[1]).astype(np.float32),
                      bx=(centre + jitter[0]).astype(np.float32),
                      by=(centre + jitter[1]).astype(np.float32))
        views = None
        if attribute == "badge":
            a = _off_view(a, objects=False, badges=True)
        elif attribute == "shape":
            a = _off_view(a, objects=True, badges=False)
        else:
            a = _off_view(a, objects=True, badges=False)
            w = 1.2 * SIZE_RADIUS[a.size]  # inside the object: the pattern fills the cell
            views = np.stack([a.x, a.y, w], axis=1).astype(np.float32)
        cells = render(a, s, image_size=p, views=views) / np.float32(255)
        offset = rng.integers(0, max(1, per_side * p - canvas + 1), 2)
        out[i] = _grid(cells, per_side, canvas, offset)
    return out
