"""The world's attributes: value tables, the per-image attribute record and its sampler.

Every image is described by independent attributes. The *discrete* ones are named in
captions and in the concept bank (shape, colour, pattern, background, size); the
*continuous* ones (position, rotation) are nuisances that captions never mention.
``noise_seed`` keys each image's private randomness (background texture, pixel noise,
distractors), so re-rendering a record with one attribute changed keeps everything
else identical (see :mod:`texter_jax.world.generator`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from typing import Any

import jax
import numpy as np

# Bumped whenever rendering, views or captions change what a seed produces: trained
# world models record it, so a cache made by an older world is never reused.
WORLD_VERSION = 2

# Value tables. Words are single tokens and never shared across attributes, so a
# bag-of-words text tower cannot confuse e.g. a colour with a background.
SHAPES = ("circle", "square", "triangle", "star", "cross", "heart")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
PATTERNS = ("solid", "striped", "dotted")
BACKGROUNDS = ("gray", "white", "grass", "sky", "checkerboard", "sand")
SIZES = ("small", "large")
# A small ringed disc beside the object (~1.5 % of the pixels): its colour is the cue of
# the small-cue classifier, while the object and background fill most of the image.
# Its colours are words of their own, never object colours.
BADGES = ("pink", "cyan", "brown", "black")

DISCRETE: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "pattern": PATTERNS,
    "background": BACKGROUNDS,
    "size": SIZES,
    "badge": BADGES,
}
CONTINUOUS = ("position", "rotation")
# Attributes an intervention can resample (position moves x and y together).
INTERVENABLE = tuple(DISCRETE) + CONTINUOUS

# Object colours as RGB in [0, 1]: saturated, so they stay distinct from the greens and
# blues of the grass and sky backgrounds.
COLOUR_RGB = np.array([
    [0.90, 0.10, 0.10],  # red
    [0.15, 0.85, 0.15],  # green
    [0.10, 0.25, 0.95],  # blue
    [0.98, 0.90, 0.10],  # yellow
    [0.60, 0.15, 0.80],  # purple
    [1.00, 0.55, 0.05],  # orange
], np.float32)
BADGE_RGB = np.array([
    [1.00, 0.40, 0.72],  # pink
    [0.05, 0.85, 0.90],  # cyan
    [0.48, 0.27, 0.10],  # brown
    [0.06, 0.06, 0.06],  # black
], np.float32)
# Badge radius (scene units, the ring included) and its light ring's width.
BADGE_RADIUS = np.float32(0.075)
BADGE_RING = np.float32(0.018)
_BADGE_CANDIDATES = 12  # rejection-sampled positions per image, drawn in a fixed order

# Object radius as a fraction of the image side. Large-ish objects on purpose: the
# world's CLIP learns shape far more slowly than colour (WORLD_NOTES), and at smaller
# radii stars, crosses and hearts lose their outline at 64x64.
SIZE_RADIUS = np.array([0.21, 0.30], np.float32)
# Centre range (fraction of the side); independent of size, wide enough to matter,
# narrow enough that a large object stays (almost) inside the frame.
POSITION_RANGE = (0.32, 0.68)
MAX_ROTATION = np.float32(np.deg2rad(20.0))


@dataclasses.dataclass(frozen=True)
class WorldAttrs:
    """Attributes of N images; every field is a numpy array of length N.

    Attributes:
      shape, colour, pattern, background, size, badge: int32 [N], indices into the value
        tables of :data:`DISCRETE`.
      x, y: float32 [N], object centre as a fraction of the image side.
      bx, by: float32 [N], badge centre (clear of the object when sampled).
      rotation: float32 [N], radians.
      noise_seed: uint32 [N], keys the image's nuisance randomness.
      distractors: int32 [N], number of small distractor blobs (0 by default).
    """

    shape: np.ndarray
    colour: np.ndarray
    pattern: np.ndarray
    background: np.ndarray
    size: np.ndarray
    badge: np.ndarray
    x: np.ndarray
    y: np.ndarray
    bx: np.ndarray
    by: np.ndarray
    rotation: np.ndarray
    noise_seed: np.ndarray
    distractors: np.ndarray

    def __len__(self) -> int:
        return int(self.shape.shape[0])

    def take(self, idx) -> WorldAttrs:
        """Rows ``idx`` (int array, slice or bool mask) of every field."""
        return WorldAttrs(**{f: np.asarray(v)[idx] for f, v in self.as_dict().items()})

    def replace(self, **fields) -> WorldAttrs:
        return dataclasses.replace(self, **fields)

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def values(self, attribute: str) -> list[str]:
        """Names of a discrete attribute's values, one per image."""
        table = DISCRETE[attribute]
        return [table[i] for i in getattr(self, attribute)]

    @staticmethod
    def concatenate(parts: Sequence[WorldAttrs]) -> WorldAttrs:
        names = [f.name for f in dataclasses.fields(WorldAttrs)]
        return WorldAttrs(**{n: np.concatenate([getattr(p, n) for p in parts])
                             for n in names})


def value_slices() -> list[tuple[int, int]]:
    """``(start, stop)`` of each discrete attribute's values when all values are laid out
    in :data:`DISCRETE` order (one logit per value: label prompts, auxiliary heads)."""
    bounds = np.cumsum([0] + [len(v) for v in DISCRETE.values()])
    return [(int(lo), int(hi)) for lo, hi in pairwise(bounds)]


def as_numpy_rng(seed_or_key: Any) -> np.random.Generator:
    """An explicit numpy Generator from an int seed, a JAX PRNG key or a Generator.

    A JAX key is turned into a 64-bit seed with ``jax.random.bits`` so the numpy
    stream is a deterministic function of the key.
    """
    if isinstance(seed_or_key, np.random.Generator):
        return seed_or_key
    if isinstance(seed_or_key, (int, np.integer)):
        return np.random.default_rng(int(seed_or_key))
    key = seed_or_key
    if not jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(np.asarray(key, np.uint32))
    bits = np.asarray(jax.random.bits(key, (2,), np.uint32), np.uint64)
    return np.random.default_rng(int(bits[0] << np.uint64(32) | bits[1]))


Constraint = int | str | Sequence[int | str] | Callable[[dict[str, np.ndarray]], np.ndarray]


def _resolve_value(attribute: str, v) -> int:
    return DISCRETE[attribute].index(v) if isinstance(v, str) else int(v)


def sample_attributes(seed_or_key: Any, n: int, *,
                      constraints: Mapping[str, Constraint] | None = None,
                      max_distractors: int = 0) -> WorldAttrs:
    """Draws N independent attribute records.

    Every discrete attribute is uniform over its values, position uniform in
    :data:`POSITION_RANGE`, rotation uniform in +-20 degrees, all independent, unless
    ``constraints`` says otherwise.

    Args:
      seed_or_key: int seed, JAX PRNG key or numpy Generator (never global state).
      n: number of records.
      constraints: optional ``{attribute: rule}`` for discrete attributes, where a rule
        is a value (index or name: every image gets it), a sequence of values (uniform
        over those), or a callable taking the dict of already-sampled int32 [N]
        attribute arrays (in :data:`DISCRETE` order) and returning int32 [N]
        (e.g. ``lambda a: a["shape"]`` ties background to shape: a planted shortcut).
      max_distractors: distractor count uniform in [0, max_distractors].

    Returns:
      A :class:`WorldAttrs` of length N.
    """
    rng = as_numpy_rng(seed_or_key)
    constraints = dict(constraints or {})
    unknown = set(constraints) - set(DISCRETE)
    if unknown:
        raise ValueError(f"constraints on unknown/continuous attributes: {sorted(unknown)}")
    # Draw every field unconditionally and in a fixed order, so a constraint on one
    # attribute does not shift the random stream of the others.
    out: dict[str, np.ndarray] = {
        a: rng.integers(0, len(vals), n).astype(np.int32) for a, vals in DISCRETE.items()}
    x = rng.uniform(*POSITION_RANGE, n).astype(np.float32)
    y = rng.uniform(*POSITION_RANGE, n).astype(np.float32)
    rotation = rng.uniform(-MAX_ROTATION, MAX_ROTATION, n).astype(np.float32)
    noise_seed = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    distractors = rng.integers(0, max_distractors + 1, n).astype(np.int32)
    choice_u = rng.random((len(DISCRETE), n))
    badge_u = rng.random((2, n, _BADGE_CANDIDATES))
    # Apply rules in DISCRETE order, so a callable may read earlier constrained values.
    for a in [a for a in DISCRETE if a in constraints]:
        rule = constraints[a]
        if callable(rule):
            vals = np.asarray(rule(dict(out)), np.int32)
        elif isinstance(rule, (int, np.integer, str)):
            vals = np.full(n, _resolve_value(a, rule), np.int32)
        else:
            allowed = np.array([_resolve_value(a, v) for v in rule], np.int32)
            u = choice_u[list(DISCRETE).index(a)]
            vals = allowed[np.minimum((u * len(allowed)).astype(np.int64), len(allowed) - 1)]
        if vals.shape != (n,) or vals.min(initial=0) < 0 or vals.max(initial=0) >= len(DISCRETE[a]):
            raise ValueError(f"constraint on {a!r} produced invalid values")
        out[a] = vals
    bx, by = _badge_positions(badge_u, x, y, SIZE_RADIUS[out["size"]])
    return WorldAttrs(**out, x=x, y=y, bx=bx, by=by, rotation=rotation,
                      noise_seed=noise_seed, distractors=distractors)


def _badge_positions(u: np.ndarray, x: np.ndarray, y: np.ndarray,
                     radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Badge centres clear of the object, from uniform draws u [2, N, K].

    The first of K candidates in [0.1, 0.9]^2 whose distance to the object centre
    exceeds the object's radius plus the badge's (plus a margin) is kept; if none is,
    the candidate farthest from the object.
    """
    cand_x = 0.1 + 0.8 * u[0]
    cand_y = 0.1 + 0.8 * u[1]
    dist = np.hypot(cand_x - x[:, None], cand_y - y[:, None])
    ok = dist > (radius + BADGE_RADIUS + 0.02)[:, None]
    pick = np.where(ok.any(axis=1), ok.argmax(axis=1), dist.argmax(axis=1))
    rows = np.arange(len(x))
    return (cand_x[rows, pick].astype(np.float32), cand_y[rows, pick].astype(np.float32))


def resample_attribute(seed_or_key: Any, attrs: WorldAttrs, attribute: str) -> WorldAttrs:
    """Changes one attribute of every record, keeping all other fields.

    Discrete attributes move to a *different* value (uniform over the others), so every
    image is really intervened on; ``position`` redraws x and y, ``rotation`` redraws
    the angle, both from their sampling ranges.

    Args:
      seed_or_key: int seed, JAX key or numpy Generator.
      attrs: N records.
      attribute: a name in :data:`INTERVENABLE`.

    Returns:
      New :class:`WorldAttrs`; only the named attribute's field(s) differ.
    """
    rng = as_numpy_rng(seed_or_key)
    n = len(attrs)
    if attribute in DISCRETE:
        k = len(DISCRETE[attribute])
        old = getattr(attrs, attribute)
        shift = rng.integers(1, k, n).astype(np.int32)  # never 0: always a new value
        return attrs.replace(**{attribute: ((old + shift) % k).astype(np.int32)})
    if attribute == "position":
        return attrs.replace(x=rng.uniform(*POSITION_RANGE, n).astype(np.float32),
                             y=rng.uniform(*POSITION_RANGE, n).astype(np.float32))
    if attribute == "rotation":
        return attrs.replace(
            rotation=rng.uniform(-MAX_ROTATION, MAX_ROTATION, n).astype(np.float32))
    raise ValueError(f"unknown attribute {attribute!r}; expected one of {INTERVENABLE}")


def sample_twins(seed_or_key: Any, attributes: Sequence[str], group_size: int = 6,
                 max_distractors: int = 0) -> WorldAttrs:
    """Groups of images that differ in exactly one discrete attribute ("twins").

    Group g holds ``min(group_size, #values)`` images that share every discrete attribute
    except ``attributes[g]``, which takes distinct values; position, rotation and noise
    stay independent per image. In a contrastive batch such a group can only be told
    apart by the varied attribute (WORLD_NOTES found this helped pattern; the world
    CLIP's final recipe does not need it, see ``world/clip_train.py``).

    Returns:
      :class:`WorldAttrs`, the groups concatenated in order.
    """
    rng = as_numpy_rng(seed_or_key)
    parts = []
    for a in attributes:
        if a not in DISCRETE:
            raise ValueError(f"twins vary a discrete attribute, not {a!r}")
        k = min(group_size, len(DISCRETE[a]))
        fields = sample_attributes(rng, k, max_distractors=max_distractors).as_dict()
        for d in DISCRETE:
            fields[d] = np.full(k, fields[d][0], np.int32)
        fields[a] = rng.permutation(len(DISCRETE[a]))[:k].astype(np.int32)
        parts.append(WorldAttrs(**fields))
    return WorldAttrs.concatenate(parts) if parts else sample_attributes(rng, 0)
