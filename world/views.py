"""Views of a scene: whole images, close-ups, partial views and wide shots, and what each
view shows.

Real classifiers are trained on random resized crops and CLIP has seen countless
close-ups; TEXTER's stage 3 reads 25-30 % crops of a concept canvas. A world whose
models only ever saw whole renders cannot be read that way, so the world has views: a
view is a camera window ``(cx, cy, w)`` in scene units (the whole image is
``(0.5, 0.5, 1)``) that :func:`texter_jax.world.generator.render` renders at any
size. :func:`visible_attributes` says which attributes a view shows, so a caption
names only those (a close-up of a red surface is "red", never "star").
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from texter_jax.world.attributes import (
    BADGE_RADIUS,
    DISCRETE,
    SHAPES,
    SIZE_RADIUS,
    WorldAttrs,
    as_numpy_rng,
)
from texter_jax.world.generator import _shape_sdf, badge_coverage, coverage, whole_views

ATTRS = tuple(DISCRETE)  # column order of visibility masks (= captions.ATTR_ORDER)

# View kinds and their default share of a training mix.
KINDS = ("whole", "close", "partial", "wide")
DEFAULT_MIX = (("whole", 0.4), ("close", 0.2), ("partial", 0.3), ("wide", 0.1))

# Visibility rules (fractions of the view's pixels or of the object's area).
SHAPE_MIN_INSIDE = 0.9    # share of the object's area inside the view to name its shape
SHAPE_MIN_RADIUS_PX = 5.0  # below this the outline is lost at the rendered size
COLOUR_MIN_SHARE = 0.015  # object pixels in the view to name its colour
PATTERN_MIN_SHARE = 0.04  # object pixels to name its pattern ...
PATTERN_PERIODS = 1.5     # ... and at least this many pattern periods across the view
PATTERN_MIN_PERIOD_PX = 4.0
BACKGROUND_MIN_SHARE = 0.2
BADGE_MIN_SHARE = 0.005   # pixels of the badge's coloured disc (1 % in a whole image)
BADGE_MIN_RADIUS_PX = 2.5  # below this a badge is a speck (wide views)
SIZE_VIEW_RANGE = (0.85, 1.2)  # "small" / "large" only make sense in a near-whole view
_PATTERN_PERIOD = 0.6  # object-local units (generator's stripe period)


@functools.cache
def _unit_areas() -> np.ndarray:
    """Area of each shape at radius 1 (local units), measured on a fine grid."""
    t = (np.arange(800) + 0.5) / 400 - 1.0
    u, v = np.meshgrid(t, -t)
    return np.array([np.mean(_shape_sdf(s, u, v) < 0) * 4.0 for s in SHAPES])


def sample_views(seed_or_key: Any, attrs: WorldAttrs,
                 mix: Mapping[str, float] | tuple = DEFAULT_MIX) -> np.ndarray:
    """One random view per record, float32 [N, 3] rows (cx, cy, w).

    Kinds: ``whole`` (the image); ``close`` (the object fills the frame: side 1.1-1.6x
    its diameter, centred on it with jitter); ``partial`` (side 0.2-0.5 of the scene: a
    third on the object's surface, a third anywhere; a third on the badge, side
    0.05-0.5: parts of the object, of the background, surfaces and the badge up close);
    ``wide`` (side 1.2-1.8: a small object in a large scene).

    Args:
      seed_or_key: int seed, JAX key or numpy Generator.
      attrs: N records.
      mix: ``{kind: weight}`` (or pairs); weights are normalised.
    """
    rng = as_numpy_rng(seed_or_key)
    mix = dict(mix)
    unknown = set(mix) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown view kinds {sorted(unknown)}; known: {KINDS}")
    n = len(attrs)
    p = np.array([mix.get(k, 0.0) for k in KINDS], np.float64)
    kind = rng.choice(len(KINDS), size=n, p=p / p.sum())
    u = rng.random((6, n)).astype(np.float32)  # fixed draws, whatever the kinds
    views = whole_views(n)
    radius = SIZE_RADIUS[attrs.size]
    close = kind == 1
    w = 2 * radius * (1.1 + 0.5 * u[0])
    views[close] = np.stack([attrs.x + (u[1] - 0.5) * 0.2 * w, attrs.y + (u[2] - 0.5) * 0.2 * w,
                             w], axis=1)[close]
    part = kind == 2
    on_badge, on_object = u[3] < 1 / 3, (u[3] >= 1 / 3) & (u[3] < 2 / 3)
    # On the badge, from inside its disc (a close-up of its colour) to some context.
    w = np.where(on_badge, 0.05 + 0.45 * u[0], 0.2 + 0.3 * u[0])
    cx = np.where(on_badge, attrs.bx + (u[1] - 0.5) * 0.5 * w,
                  np.where(on_object, attrs.x + (u[1] - 0.5) * 1.2 * radius, 0.1 + 0.8 * u[1]))
    cy = np.where(on_badge, attrs.by + (u[2] - 0.5) * 0.5 * w,
                  np.where(on_object, attrs.y + (u[2] - 0.5) * 1.2 * radius, 0.1 + 0.8 * u[2]))
    views[part] = np.stack([cx, cy, w], axis=1)[part]
    wide = kind == 3
    w = 1.2 + 0.6 * u[0]
    views[wide] = np.stack([0.5 + 0.2 * (u[1] - 0.5), 0.5 + 0.2 * (u[2] - 0.5), w],
                           axis=1)[wide]
    return views.astype(np.float32)


def visible_attributes(attrs: WorldAttrs, views=None, image_size: int = 64,
                       resolution: int = 32) -> np.ndarray:
    """Which discrete attributes each view shows, bool [N, len(ATTRS)].

    Measured on the view's object and badge coverage (at ``resolution`` px; rules in
    the constants above): shape when >= 90 % of the object is inside and its radius
    spans >= 5 px at ``image_size``; colour when >= 1.5 % of the pixels are the object;
    pattern when >= 4 % are and 1.5 pattern periods (each >= 4 px) fit across the
    view; background when >= 20 % of the pixels are background; size only in
    near-whole views that show the shape. The badge's values are colours, so it is
    named like the object's colour: when >= 0.5 % of the pixels are its coloured disc
    (a close-up inside it included; the disc is 1 % of a whole image) and its radius
    spans >= 2.5 px.

    Args:
      attrs: N records; views: float [N, 3] or None (whole images).
      image_size: the size the views are rendered at (sets the pixel-scale rules).
      resolution: grid on which coverage is measured.
    """
    n = len(attrs)
    views = whole_views(n) if views is None else np.asarray(views, np.float32)
    w = views[:, 2]
    obj = coverage(attrs, resolution, views).reshape(n, -1)
    badge = badge_coverage(attrs, resolution, views).reshape(n, -1)
    badge_disc = badge_coverage(attrs, resolution, views, inner=True).reshape(n, -1)
    obj_visible = np.clip(obj - badge, 0.0, 1.0)  # the badge is drawn over the object
    obj_share = obj_visible.mean(axis=1)
    badge_share = badge.mean(axis=1)
    radius = SIZE_RADIUS[attrs.size]
    obj_area = _unit_areas()[attrs.shape] * radius ** 2
    inside = obj.mean(axis=1) * w ** 2 / obj_area
    radius_px = radius * image_size / w
    period_px = _PATTERN_PERIOD * radius_px
    shape = (inside >= SHAPE_MIN_INSIDE) & (radius_px >= SHAPE_MIN_RADIUS_PX)
    out = {
        "shape": shape,
        "colour": obj_share >= COLOUR_MIN_SHARE,
        "pattern": ((obj_share >= PATTERN_MIN_SHARE) & (period_px >= PATTERN_MIN_PERIOD_PX)
                    & (image_size >= PATTERN_PERIODS * period_px)),
        "background": 1.0 - obj_share - badge_share >= BACKGROUND_MIN_SHARE,
        "size": shape & (w >= SIZE_VIEW_RANGE[0]) & (w <= SIZE_VIEW_RANGE[1]),
        "badge": ((badge_disc.mean(axis=1) >= BADGE_MIN_SHARE)
                  & (BADGE_RADIUS * image_size / w >= BADGE_MIN_RADIUS_PX)),
    }
    return np.stack([out[a] for a in ATTRS], axis=1)
