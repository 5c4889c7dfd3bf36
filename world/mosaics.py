"""Mosaic views: scenes made of several small renders that share one attribute value.

Stage 3 reads 25-30 % crops of a concept canvas, and MACO paints repeated parts of a
concept, so a crop often holds several objects or pieces of them. A world whose models
only ever saw one object per scene cannot read that. A *mosaic* is a
grid of tiles, each tile a whole render of its own record; every tile shares the value of
one attribute (same shape, or same colour, or same badge colour, ...) and the rest varies.
The image is a window on that grid at a random offset, so its edges cut across tiles:
with ``t`` tiles per window side (``t`` in [1, 3]) a window touches 2x2 to 4x4 tiles.

:func:`mosaic_visible` says what a mosaic shows, with the visibility rules of
:mod:`texter_jax.world.views` applied to the mosaic as a whole, and only for the values
every tile in the window shares, so a caption names only those (a mosaic of red objects
of mixed shapes is "red", never "star"; "small" / "large" are never named).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import texter_jax.world.views as _views
from texter_jax.world.attributes import (
    BADGE_RADIUS,
    DISCRETE,
    SIZE_RADIUS,
    WorldAttrs,
    as_numpy_rng,
    sample_attributes,
)
from texter_jax.world.generator import badge_coverage, coverage, render

ATTRS = tuple(DISCRETE)  # column order of visibility masks (= captions.ATTR_ORDER)
# Tiles per window side: from 1 (a window one tile wide, cut across 2x2 tiles, as a
# stage-3 crop of an image tiled at crop scale) to 3 (a window touching 4x4 tiles).
TILES_RANGE = (1.0, 3.0)
# The attributes a mosaic shares by default, and their odds (the three the issue names,
# plus pattern and background so every value canvas of the reader controls has kin).
DEFAULT_SHARED = (("shape", 0.3), ("colour", 0.2), ("badge", 0.3), ("pattern", 0.1),
                  ("background", 0.1))


def max_tiles(attribute: str, image_size: int) -> float:
    """Most tiles per window side at which ``attribute`` stays resolvable for the smallest
    object, by the pixel-scale rules of :mod:`texter_jax.world.views`, capped at
    ``TILES_RANGE[1]`` (e.g. shape at 64 px: radius 0.21 * 64 / t >= 5 px, t <= 2.69;
    badge: 0.075 * 64 / t >= 2.5 px, t <= 1.92)."""
    small = float(SIZE_RADIUS.min())
    limit = {"shape": small * image_size / _views.SHAPE_MIN_RADIUS_PX,
             "badge": float(BADGE_RADIUS) * image_size / _views.BADGE_MIN_RADIUS_PX,
             "pattern": _views._PATTERN_PERIOD * small * image_size
             / _views.PATTERN_MIN_PERIOD_PX}.get(attribute, TILES_RANGE[1])
    return float(np.clip(limit, TILES_RANGE[0], TILES_RANGE[1]))


@dataclasses.dataclass(frozen=True)
class Mosaics:
    """N mosaics of side ``image_size`` px.

    Attributes:
      tiles: the tiles' records, mosaic by mosaic, each mosaic's grid row-major.
      start: int64 [N + 1], mosaic i's tiles are ``tiles.take(slice(start[i], start[i+1]))``.
      per_side: int64 [N], tiles per grid side (the grid is per_side^2 tiles).
      tile_px: int64 [N], tile side in pixels (each tile is a whole render at that size).
      offset: int64 [N, 2], the window's top-left corner (row, column) in grid pixels,
        each in [0, tile_px).
      shared: int64 [N], index into :data:`ATTRS` of the attribute every tile shares.
      image_size: S, the window's side in pixels.
    """

    tiles: WorldAttrs
    start: np.ndarray
    per_side: np.ndarray
    tile_px: np.ndarray
    offset: np.ndarray
    shared: np.ndarray
    image_size: int

    def __len__(self) -> int:
        return int(self.per_side.shape[0])

    def tiles_of(self, i: int) -> WorldAttrs:
        return self.tiles.take(slice(int(self.start[i]), int(self.start[i + 1])))

    def records(self) -> WorldAttrs:
        """One record per mosaic, its first tile: it carries the shared value (and, for
        every attribute all tiles share, that value too). Labels and captions are read
        from it, together with :func:`mosaic_visible`."""
        return self.tiles.take(self.start[:-1])

    def shared_values(self) -> np.ndarray:
        """int32 [N], the value of each mosaic's shared attribute."""
        rec = self.records()
        return np.array([getattr(rec, ATTRS[s])[i] for i, s in enumerate(self.shared)],
                        np.int32)


def _pairs(shared) -> tuple[list[str], np.ndarray]:
    if isinstance(shared, str):
        shared = ((shared, 1.0),)
    names = [str(a) for a, _ in dict(shared).items()]
    unknown = set(names) - set(ATTRS)
    if unknown:
        raise ValueError(f"mosaics share a discrete attribute, not {sorted(unknown)}")
    w = np.array([float(v) for v in dict(shared).values()])
    return names, w / w.sum()


def sample_mosaics(seed_or_key: Any, n: int, image_size: int, *,
                   shared: str | Sequence[tuple[str, float]] = DEFAULT_SHARED,
                   values: np.ndarray | None = None,
                   constraints: Mapping[str, Callable] | None = None,
                   tiles_range: tuple[float, float] | None = None) -> Mosaics:
    """Draws N mosaics whose tiles share one attribute value each.

    Args:
      seed_or_key: int seed, JAX key or numpy Generator.
      n: number of mosaics.
      image_size: S, the side the mosaics are rendered at.
      shared: the attribute every tile of a mosaic shares, or ``(attribute, weight)``
        pairs to draw it from per mosaic.
      values: optional int [N], the shared value of each mosaic (default uniform).
      constraints: optional ``{attribute: callable}`` applied to the tiles as in
        :func:`~texter_jax.world.attributes.sample_attributes` (after the shared value
        is fixed, so ``{"background": lambda a: a["shape"]}`` ties a tile's background to
        its shape: the shortcut classifier's training world).
      tiles_range: ``(lo, hi)`` tiles per window side, uniform; default
        ``(1, max_tiles(shared attribute))``, so the shared value stays resolvable.

    Returns:
      :class:`Mosaics`.
    """
    rng = as_numpy_rng(seed_or_key)
    names, p = _pairs(shared)
    which = rng.choice(len(names), size=n, p=p)
    shared_idx = np.array([ATTRS.index(names[k]) for k in which], np.int64)
    u = rng.random((3, n))
    lo = np.full(n, TILES_RANGE[0]) if tiles_range is None else np.full(n, tiles_range[0])
    hi = (np.array([max_tiles(ATTRS[s], image_size) for s in shared_idx])
          if tiles_range is None else np.full(n, tiles_range[1]))
    t = lo + (hi - lo) * u[0]
    tile_px = np.maximum(4, np.rint(image_size / t)).astype(np.int64)
    per_side = (-(-image_size // tile_px) + 1).astype(np.int64)  # ceil(S / T) + 1
    offset = np.minimum((u[1:].T * tile_px[:, None]).astype(np.int64), tile_px[:, None] - 1)
    counts = per_side ** 2
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if values is None:
        values = np.array([rng.integers(len(DISCRETE[ATTRS[s]])) for s in shared_idx],
                          np.int64)
    values = np.asarray(values, np.int64)
    if values.shape != (n,):
        raise ValueError(f"values must be int [{n}], got shape {values.shape}")
    tile_shared = np.repeat(shared_idx, counts)
    tile_value = np.repeat(values, counts)
    rules: dict[str, Callable] = {}
    for j, a in enumerate(ATTRS):
        mask = tile_shared == j
        if not mask.any():
            continue
        user = (constraints or {}).get(a)
        rules[a] = (lambda d, a=a, mask=mask, user=user:
                    np.where(mask, tile_value, d[a] if user is None else user(d)))
    for a, rule in (constraints or {}).items():
        rules.setdefault(a, rule)
    tiles = sample_attributes(rng, int(start[-1]), constraints=rules)
    return Mosaics(tiles=tiles, start=start, per_side=per_side, tile_px=tile_px,
                   offset=offset, shared=shared_idx, image_size=int(image_size))


def _window(grid: np.ndarray, per_side: int, offset: np.ndarray, size: int) -> np.ndarray:
    """Cells [per_side^2, P, P, ...] -> the [size, size, ...] window of their grid at
    ``offset`` (row, column) pixels."""
    p = grid.shape[1]
    big = grid.reshape(per_side, per_side, p, p, *grid.shape[3:])
    big = np.swapaxes(big, 1, 2).reshape(per_side * p, per_side * p, *grid.shape[3:])
    oy, ox = int(offset[0]), int(offset[1])
    return big[oy:oy + size, ox:ox + size]


def touched_tiles(m: Mosaics, i: int) -> np.ndarray:
    """bool [per_side^2], row-major: the tiles of mosaic i that its window overlaps."""
    n_side, px, s = int(m.per_side[i]), int(m.tile_px[i]), m.image_size
    lo = np.arange(n_side) * px
    rows = (lo < m.offset[i, 0] + s) & (lo + px > m.offset[i, 0])
    cols = (lo < m.offset[i, 1] + s) & (lo + px > m.offset[i, 1])
    return (rows[:, None] & cols[None, :]).reshape(-1)


def _by_tile_px(m: Mosaics):
    """Groups of mosaics that share a tile size, rendered in one call: ``(px, idx,
    rows, touched)`` with the tiles' rows in ``m.tiles`` (touched tiles only) and each
    mosaic's touched mask."""
    for px in np.unique(m.tile_px):
        idx = np.flatnonzero(m.tile_px == px)
        touched = [touched_tiles(m, i) for i in idx]
        rows = np.concatenate([m.start[i] + np.flatnonzero(t)
                               for i, t in zip(idx, touched, strict=True)])
        yield int(px), idx, rows, touched


def render_mosaics(m: Mosaics, seed: int = 0, **kw) -> np.ndarray:
    """Renders mosaics: uint8 [N, S, S, 3]. A pure function of ``(m, seed)``; ``kw`` goes
    to :func:`~texter_jax.world.generator.render` (e.g. ``noise_std``)."""
    s = m.image_size
    out = np.empty((len(m), s, s, 3), np.uint8)
    for px, idx, rows, touched in _by_tile_px(m):
        # Only the tiles the window overlaps are rendered: the others stay black.
        cells = render(m.tiles.take(rows), seed, image_size=px, **kw)
        pos = 0
        for i, t in zip(idx, touched, strict=True):
            grid = np.zeros((t.size, px, px, 3), np.uint8)
            grid[t] = cells[pos:pos + int(t.sum())]
            pos += int(t.sum())
            out[i] = _window(grid, int(m.per_side[i]), m.offset[i], s)
    return out


def mosaic_visible(m: Mosaics) -> np.ndarray:
    """What each mosaic shows, bool [N, len(ATTRS)].

    An attribute is shown only if every tile the window touches has the same value, and
    the mosaic as a whole passes the rules of :mod:`texter_jax.world.views` at
    ``image_size``: shape when one tile's object is >= 90 % inside the window with a
    radius >= 5 px; colour when >= 1.5 % of the window's pixels are object; pattern when
    >= 4 % are and one such tile's pattern period is >= 4 px; background when >= 20 % are
    background; badge when >= 0.5 % are badge discs with a radius >= 2.5 px; size never
    (small and large need a scene of one object). Measured on the exact pixel grid.
    """
    s = m.image_size
    out = np.zeros((len(m), len(ATTRS)), bool)
    for px, idx, rows, touched in _by_tile_px(m):
        tiles = m.tiles.take(rows)
        obj = coverage(tiles, px)
        badge = badge_coverage(tiles, px)
        disc = badge_coverage(tiles, px, inner=True)
        pos = 0
        for i, hit in zip(idx, touched, strict=True):
            sl = slice(pos, pos + int(hit.sum()))
            pos += int(hit.sum())
            n_side = int(m.per_side[i])
            # [touched, P, P]: which pixels of each touched tile fall inside the window
            inwin = np.zeros((n_side * px, n_side * px), bool)
            oy, ox = m.offset[i]
            inwin[oy:oy + s, ox:ox + s] = True
            inwin = np.swapaxes(inwin.reshape(n_side, px, n_side, px), 1, 2)
            w = inwin.reshape(n_side * n_side, px, px)[hit]
            t = tiles.take(np.arange(sl.start, sl.stop))
            o, b, d = obj[sl], badge[sl], disc[sl]
            o_vis = np.clip(o - b, 0.0, 1.0) * w
            obj_share = o_vis.sum() / s ** 2
            badge_share = (b * w).sum() / s ** 2
            radius_px = SIZE_RADIUS[t.size] * px
            inside = (o * w).sum(axis=(1, 2)) / np.maximum(o.sum(axis=(1, 2)), 1e-9)
            has_obj = o_vis.sum(axis=(1, 2)) > 0
            period = _views._PATTERN_PERIOD * radius_px
            same = {a: np.all(getattr(t, a) == getattr(t, a)[0]) for a in ATTRS}
            shows = {
                "shape": np.any((inside >= _views.SHAPE_MIN_INSIDE)
                                & (radius_px >= _views.SHAPE_MIN_RADIUS_PX)),
                "colour": obj_share >= _views.COLOUR_MIN_SHARE,
                "pattern": (obj_share >= _views.PATTERN_MIN_SHARE) and np.any(
                    has_obj & (period >= _views.PATTERN_MIN_PERIOD_PX)
                    & (s >= _views.PATTERN_PERIODS * period)),
                "background": 1.0 - obj_share - badge_share >= _views.BACKGROUND_MIN_SHARE,
                "size": False,
                "badge": ((d * w).sum() / s ** 2 >= _views.BADGE_MIN_SHARE)
                and BADGE_RADIUS * px >= _views.BADGE_MIN_RADIUS_PX,
            }
            out[i] = [bool(same[a] and shows[a]) for a in ATTRS]
    return out
