"""Rendering: attribute records -> RGB images, a pure function of (attributes, seed, view).

Each image's nuisance randomness (background texture, checkerboard phase, pixel noise,
distractor blobs) comes from its own numpy stream keyed by ``(seed, noise_seed[i])``,
and is drawn in a fixed order whatever the attributes are. So re-rendering a record
with one attribute changed changes only the pixels that attribute owns: the object for
shape / colour / pattern / size / position / rotation, the background for background.
Everything except that per-image draw is vectorised over a chunk of images.

A *view* is a camera window on the scene, ``(cx, cy, w)`` in scene units (the whole
image is ``(0.5, 0.5, 1)``; see :mod:`texter_jax.world.views`). Object, badge,
distractors, checkerboard, sky gradient and cloud / grass noise live in scene
coordinates, so a close-up magnifies them and a wide view shrinks them (the coarse
noise continues past the scene's edge by mirroring); pixel noise and the fine grain of
grass and sand stay per output pixel, as sensor noise and fine texture would.
"""

from __future__ import annotations

import numpy as np

from texter_jax.world.attributes import (
    BACKGROUNDS,
    BADGE_RADIUS,
    BADGE_RGB,
    BADGE_RING,
    COLOUR_RGB,
    SHAPES,
    SIZE_RADIUS,
    WorldAttrs,
)

# Coarse value-noise grid (cells per side) for grass / sky clouds, independent of the
# image size so 64 and 96 px images show the same world.
_COARSE = 5
_STREAK = (5, 24)  # grass blades: few rows, many columns -> vertical streaks
_CHECKS = 8  # checkerboard squares per side
_MAX_DISTRACTORS = 3
# Pattern frequencies in object-local units (radius = 1): ~3 stripe periods and ~3x3
# dots across an object at any size, so a pattern looks the same on small and large
# objects, and stays resolvable (>= 8 px period) on small objects at 64 px.
_STRIPE_PERIOD = 0.6
_DOT_PERIOD = 0.62
_DOT_RADIUS = 0.2
_PATTERN_SHADE = 0.35  # stripes and dots are a dark shade of the object colour

_RING_GREY = 0.92  # the badge's ring
_GRAINY = [BACKGROUNDS.index("grass"), BACKGROUNDS.index("sand")]
_BG_PLAIN = {"gray": (0.50, 0.50, 0.50), "white": (0.93, 0.93, 0.93)}


def _draw_nuisance(seed: int, noise_seeds: np.ndarray, needs_grain: np.ndarray,
                   size: int) -> dict[str, np.ndarray]:
    """Per-image random draws, in a fixed order, from streams keyed by (seed, noise_seed).

    Returns a dict of float32 arrays with leading axis N (``grain`` is only filled
    where ``needs_grain``).
    """
    n = len(noise_seeds)
    out = {
        "pixel": np.empty((n, size, size, 3), np.float32),
        "grain": np.empty((n, size, size), np.float32),
        "coarse": np.empty((n, _COARSE, _COARSE), np.float32),
        "streak": np.empty((n, *_STREAK), np.float32),
        "phase": np.empty((n, 2), np.float32),
        "distract": np.empty((n, _MAX_DISTRACTORS, 4), np.float32),
    }
    for i, ns in enumerate(noise_seeds):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(ns)])
        out["pixel"][i] = rng.standard_normal((size, size, 3), dtype=np.float32)
        out["coarse"][i] = rng.random((_COARSE, _COARSE), dtype=np.float32)
        out["streak"][i] = rng.random(_STREAK, dtype=np.float32)
        out["phase"][i] = rng.random(2, dtype=np.float32)
        out["distract"][i] = rng.random((_MAX_DISTRACTORS, 4), dtype=np.float32)
        # Drawn last and only for textured backgrounds: skipping it shifts no other draw.
        if needs_grain[i]:
            out["grain"][i] = rng.random((size, size), dtype=np.float32)
    return out


def _interp_weights(pos: np.ndarray, n_in: int) -> np.ndarray:
    """Linear interpolation weights [N, S, n_in] reading a grid of n_in nodes over
    [0, 1] at scene coordinates ``pos`` [N, S]; outside [0, 1] the grid is mirrored."""
    pos = 1.0 - np.abs(np.mod(pos, 2.0) - 1.0)  # mirror: continues the noise past edges
    pos = pos * (n_in - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    w = (pos - lo).astype(np.float32)
    m = np.zeros((*pos.shape, n_in), np.float32)
    np.put_along_axis(m, lo[..., None], (1 - w)[..., None], axis=-1)
    np.put_along_axis(m, lo[..., None] + 1, w[..., None], axis=-1)
    return m


def _sample_grid(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear reading of grids [N, gh, gw] at scene rows ys [N, S] and columns xs [N, S]
    -> [N, S, S]."""
    rows = _interp_weights(ys, grid.shape[1])
    cols = _interp_weights(xs, grid.shape[2])
    return rows @ grid @ np.swapaxes(cols, 1, 2)


def _pixel_coords(views: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Scene coordinates of pixel centres: ys, xs float32 [N, S] for views [N, 3]."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    w = views[:, 2:3]
    return views[:, 1:2] + w * t[None], views[:, 0:1] + w * t[None]


def _backgrounds(kind: np.ndarray, nz: dict[str, np.ndarray], ys: np.ndarray,
                 xs: np.ndarray) -> np.ndarray:
    """Background images float32 [N, S, S, 3] in [0, 1] for background indices [N],
    seen at scene rows ys and columns xs [N, S]."""
    n, size = ys.shape
    bg = np.empty((n, size, size, 3), np.float32)
    for k, name in enumerate(BACKGROUNDS):
        idx = np.nonzero(kind == k)[0]
        if idx.size == 0:
            continue
        y, x = ys[idx], xs[idx]
        if name in _BG_PLAIN:
            bg[idx] = np.asarray(_BG_PLAIN[name], np.float32)
        elif name == "grass":
            blobs = _sample_grid(nz["coarse"][idx], y, x)
            blades = _sample_grid(nz["streak"][idx], y, x)
            light = 0.55 + 0.35 * blobs + 0.45 * (blades - 0.5) + 0.2 * (nz["grain"][idx] - 0.5)
            bg[idx] = light[..., None] * np.array([0.20, 0.50, 0.12], np.float32)
        elif name == "sky":
            top, bottom = np.array([0.30, 0.55, 0.95]), np.array([0.78, 0.88, 1.0])
            ty = np.clip(y, 0.0, 1.0)[:, :, None, None]  # [N, S, 1, 1]
            grad = top + (bottom - top) * ty
            clouds = np.clip((_sample_grid(nz["coarse"][idx], y, x) - 0.6) * 3.0, 0, 1)
            bg[idx] = grad + clouds[..., None] * (0.97 - grad)
        elif name == "checkerboard":
            ph = nz["phase"][idx]  # random offset of the squares, per image
            cy = np.floor(y * _CHECKS + ph[:, :1]).astype(int)
            cx = np.floor(x * _CHECKS + ph[:, 1:]).astype(int)
            odd = (cy[:, :, None] + cx[:, None, :]) % 2
            bg[idx] = np.where(odd[..., None] == 1, 0.85, 0.15).astype(np.float32)
        elif name == "sand":
            light = 0.85 + 0.3 * (nz["grain"][idx] - 0.5) + 0.1 * (
                _sample_grid(nz["coarse"][idx], y, x) - 0.5)
            bg[idx] = light[..., None] * np.array([0.87, 0.75, 0.52], np.float32)
        else:  # pragma: no cover - table and renderer out of sync
            raise ValueError(f"no renderer for background {name!r}")
    return bg


def _shape_sdf(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance to a unit shape's outline (negative inside), local units.

    Exact near edges (that is all anti-aliasing needs), approximate near corners.
    ``u, v``: object-local coordinates (radius 1, v up), any equal shapes.
    """
    if name == "circle":
        return np.sqrt(u * u + v * v) - 0.95
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.78
    if name == "triangle":  # equilateral, apex up, circumradius 1 (centred lower)
        vv = v + 0.15
        return np.maximum(-(vv + 0.5), (np.sqrt(3.0) * np.abs(u) + vv - 1.0) * 0.5)
    if name == "star":  # five-point star, outer radius 1, inner 0.45, straight edges
        r_out, r_in, half = 1.0, 0.45, np.pi / 5
        rho = np.sqrt(u * u + v * v)
        phi = np.mod(np.arctan2(u, v), 2 * half)  # angle from "up", folded per spike
        phi = np.where(phi > half, 2 * half - phi, phi)
        px, py = rho * np.cos(phi), rho * np.sin(phi)
        # Edge from the spike (r_out, 0) to the notch r_in * (cos half, sin half).
        dx, dy = r_in * np.cos(half) - r_out, r_in * np.sin(half)
        return -(dx * py - dy * (px - r_out)) / np.hypot(dx, dy)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au - 0.32, av - 0.95), np.maximum(av - 0.32, au - 0.95))
    if name == "heart":  # a diamond with two discs on its upper edges
        c0, side = -0.2, 1.0
        du, dv = u, v - c0
        diamond = np.maximum(np.abs(du + dv), np.abs(dv - du)) / np.sqrt(2.0) - side / 2
        m = side / (2 * np.sqrt(2.0))  # upper-edge midpoints at (+-m, c0 + m)
        lobes = np.sqrt((np.abs(u) - m) ** 2 + (dv - m) ** 2) - side / 2
        return np.minimum(diamond, lobes)
    raise ValueError(f"no renderer for shape {name!r}")


def _local_coords(attrs: WorldAttrs, ys: np.ndarray, xs: np.ndarray):
    """Object-local coordinates u, v float32 [N, S, S] (radius = 1, v up)."""
    dx = xs[:, None, :] - attrs.x[:, None, None]
    dy = ys[:, :, None] - attrs.y[:, None, None]
    c = np.cos(attrs.rotation)[:, None, None]
    sn = np.sin(attrs.rotation)[:, None, None]
    r = SIZE_RADIUS[attrs.size][:, None, None]
    u = (c * dx + sn * dy) / r
    v = -(-sn * dx + c * dy) / r
    return u, v


def _px_per_scene_unit(views: np.ndarray, size: int) -> np.ndarray:
    return (size / views[:, 2])[:, None, None]  # [N, 1, 1]


def _coverage(attrs: WorldAttrs, u: np.ndarray, v: np.ndarray, px_per_unit: np.ndarray
              ) -> np.ndarray:
    """Anti-aliased object coverage alpha float32 [N, S, S] in [0, 1].

    Coverage is a one-pixel linear ramp across the outline: alpha = 0.5 - d, with d the
    signed distance in pixels (cheaper than supersampling, same look).
    """
    d = np.empty(u.shape, np.float32)
    for k, name in enumerate(SHAPES):
        idx = np.nonzero(attrs.shape == k)[0]
        if idx.size:
            d[idx] = _shape_sdf(name, u[idx], v[idx])
    return np.clip(0.5 - d * SIZE_RADIUS[attrs.size][:, None, None] * px_per_unit, 0.0, 1.0)


def _badge(attrs: WorldAttrs, ys: np.ndarray, xs: np.ndarray, px_per_unit: np.ndarray):
    """Badge coverage alpha [N, S, S] and colour [N, S, S, 3]: a disc of the badge colour
    inside a light ring, anti-aliased like the object."""
    dist = np.sqrt((xs[:, None, :] - attrs.bx[:, None, None]) ** 2
                   + (ys[:, :, None] - attrs.by[:, None, None]) ** 2)
    alpha = np.clip(0.5 - (dist - BADGE_RADIUS) * px_per_unit, 0.0, 1.0)
    inner = np.clip(0.5 - (dist - (BADGE_RADIUS - BADGE_RING)) * px_per_unit, 0.0, 1.0)
    colour = BADGE_RGB[attrs.badge][:, None, None, :]
    return alpha, inner[..., None] * colour + (1 - inner[..., None]) * np.float32(_RING_GREY)


def _object_colour(attrs: WorldAttrs, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Object surface colour with its pattern, float32 [N, S, S, 3]."""
    base = COLOUR_RGB[attrs.colour][:, None, None, :]
    dark = np.zeros(u.shape, bool)
    # Each pattern is evaluated only on the images that carry it (images, not pixels:
    # whole-image slices stay vectorised).
    idx = np.nonzero(attrs.pattern == 1)[0]  # stripes
    if idx.size:
        dark[idx] = np.mod((u[idx] + v[idx]) * np.float32(
            1.0 / (np.sqrt(2.0) * _STRIPE_PERIOD)), 1.0) < 0.5
    idx = np.nonzero(attrs.pattern == 2)[0]  # dots
    if idx.size:
        du = np.mod(u[idx] * np.float32(1.0 / _DOT_PERIOD), 1.0) - 0.5
        dv = np.mod(v[idx] * np.float32(1.0 / _DOT_PERIOD), 1.0) - 0.5
        dark[idx] = (du * du + dv * dv) <= (_DOT_RADIUS / _DOT_PERIOD) ** 2
    return base * np.where(dark[..., None], np.float32(_PATTERN_SHADE), np.float32(1.0))


def _distractors(img: np.ndarray, count: np.ndarray, draws: np.ndarray, ys: np.ndarray,
                 xs: np.ndarray) -> None:
    """Paints up to ``count`` small neutral-grey discs in place (under the object)."""
    for j in range(_MAX_DISTRACTORS):
        idx = np.nonzero(count > j)[0]
        if idx.size == 0:
            continue
        d = draws[idx, j]  # x, y, radius, grey level; all uniform in [0, 1)
        cx, cy = 0.08 + 0.84 * d[:, 0], 0.08 + 0.84 * d[:, 1]
        rad = 0.035 + 0.035 * d[:, 2]
        grey = 0.2 + 0.6 * d[:, 3]
        dist2 = (xs[idx][:, None, :] - cx[:, None, None]) ** 2 + (
            ys[idx][:, :, None] - cy[:, None, None]) ** 2
        m = (dist2 <= rad[:, None, None] ** 2)[..., None]
        img[idx] = np.where(m, grey[:, None, None, None], img[idx])


def whole_views(n: int) -> np.ndarray:
    """The whole-image view for N images: float32 [N, 3] rows (0.5, 0.5, 1)."""
    return np.tile(np.array([0.5, 0.5, 1.0], np.float32), (n, 1))


def _check_views(views, n: int) -> np.ndarray:
    if views is None:
        return whole_views(n)
    views = np.asarray(views, np.float32)
    if views.shape != (n, 3) or np.any(views[:, 2] <= 0):
        raise ValueError(f"views must be float [{n}, 3] rows (cx, cy, w) with w > 0, "
                         f"got shape {views.shape}")
    return views


def render(attrs: WorldAttrs, seed: int = 0, *, image_size: int = 64,
           noise_std: float = 0.03, chunk: int = 256, views=None) -> np.ndarray:
    """Renders N attribute records as images.

    A pure function of ``(attrs, seed, image_size, noise_std, views)``: rendering a
    subset of records, or the same records in another order or chunking, gives the same
    pixels.

    Args:
      attrs: N records (see :class:`~texter_jax.world.attributes.WorldAttrs`).
      seed: global render seed, combined with each record's ``noise_seed``.
      image_size: S, side in pixels (64 default; 96 for sharper shapes).
      noise_std: standard deviation of the additive Gaussian pixel noise (in [0, 1] units).
      chunk: images rendered per vectorised block (a few chunk * S^2 * 3 float32 arrays).
      views: optional float [N, 3] camera windows (cx, cy, w) in scene units; None is
        the whole image, (0.5, 0.5, 1).

    Returns:
      uint8 [N, S, S, 3], RGB.
    """
    n = len(attrs)
    views = _check_views(views, n)
    out = np.empty((n, image_size, image_size, 3), np.uint8)
    for start in range(0, n, chunk):
        a = attrs.take(slice(start, start + chunk))
        vw = views[start:start + chunk]
        ys, xs = _pixel_coords(vw, image_size)
        ppu = _px_per_scene_unit(vw, image_size)
        needs_grain = np.isin(a.background, _GRAINY)
        nz = _draw_nuisance(seed, a.noise_seed, needs_grain, image_size)
        img = _backgrounds(a.background, nz, ys, xs)
        if a.distractors.any():
            _distractors(img, a.distractors, nz["distract"], ys, xs)
        u, v = _local_coords(a, ys, xs)
        alpha = _coverage(a, u, v, ppu)[..., None]
        img = img * (1.0 - alpha) + _object_colour(a, u, v) * alpha
        b_alpha, b_colour = _badge(a, ys, xs, ppu)
        img = img * (1.0 - b_alpha[..., None]) + b_colour * b_alpha[..., None]
        img = img + noise_std * nz["pixel"]
        out[start:start + chunk] = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return out


def render_float(attrs: WorldAttrs, seed: int = 0, **kw) -> np.ndarray:
    """:func:`render` as float32 [N, S, S, 3] in [0, 1], the library's image convention."""
    return render(attrs, seed, **kw).astype(np.float32) / 255.0


def coverage(attrs: WorldAttrs, image_size: int = 64, views=None) -> np.ndarray:
    """Object coverage alpha float32 [N, S, S] in [0, 1] (1 inside, 0 outside), before
    the badge is drawn over it."""
    views = _check_views(views, len(attrs))
    ys, xs = _pixel_coords(views, image_size)
    u, v = _local_coords(attrs, ys, xs)
    return _coverage(attrs, u, v, _px_per_scene_unit(views, image_size))


def badge_coverage(attrs: WorldAttrs, image_size: int = 64, views=None, *,
                   inner: bool = False) -> np.ndarray:
    """Badge coverage alpha float32 [N, S, S] in [0, 1]; ``inner``: only its coloured
    disc, without the ring."""
    views = _check_views(views, len(attrs))
    ys, xs = _pixel_coords(views, image_size)
    ppu = _px_per_scene_unit(views, image_size)
    if not inner:
        return _badge(attrs, ys, xs, ppu)[0]
    dist = np.sqrt((xs[:, None, :] - attrs.bx[:, None, None]) ** 2
                   + (ys[:, :, None] - attrs.by[:, None, None]) ** 2)
    return np.clip(0.5 - (dist - (BADGE_RADIUS - BADGE_RING)) * ppu, 0.0, 1.0)


def object_mask(attrs: WorldAttrs, image_size: int = 64, views=None) -> np.ndarray:
    """Where the object is: bool [N, S, S] (any coverage). Useful for tests and figures."""
    return coverage(attrs, image_size, views) > 0
