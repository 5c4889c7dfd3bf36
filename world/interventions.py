"""Which attribute drives a classifier's decision, measured by intervention.

For held-out images, each attribute in turn is resampled (re-rendered with every other
attribute, the position and the pixel noise fixed) and the drop of the probability of
the class predicted on the original image is recorded. The attribute with the largest
mean drop is the classifier's decision-critical attribute: it is measured, never
assumed (a shortcut classifier may rely on background, shape or both).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from texter_jax.world.attributes import (
    DISCRETE,
    INTERVENABLE,
    WorldAttrs,
    as_numpy_rng,
    resample_attribute,
)
from texter_jax.world.generator import render


@dataclasses.dataclass(frozen=True)
class InterventionRow:
    """Effect of resampling one attribute.

    Attributes:
      attribute: the resampled attribute.
      mean_drop: mean over images of p(pred | original) - p(pred | intervened).
      sem: standard error of that mean.
      flip_rate: fraction of images whose predicted class changed.
      n: number of (image, resample) pairs.
    """

    attribute: str
    mean_drop: float
    sem: float
    flip_rate: float
    n: int


@dataclasses.dataclass(frozen=True)
class InterventionTable:
    """Rows sorted by decreasing ``mean_drop``, plus per-image drops.

    Attributes:
      rows: one :class:`InterventionRow` per attribute, largest effect first.
      drops: ``{attribute: float32 [N]}`` per-image drop (averaged over repeats).
      base_accuracy: accuracy of the original predictions when labels were given.
    """

    rows: tuple[InterventionRow, ...]
    drops: dict[str, np.ndarray]
    base_accuracy: float | None = None

    @property
    def critical(self) -> str:
        """The decision-critical attribute: the largest mean drop."""
        return self.rows[0].attribute

    def row(self, attribute: str) -> InterventionRow:
        return next(r for r in self.rows if r.attribute == attribute)

    def to_dict(self) -> dict[str, Any]:
        return {"critical": self.critical, "base_accuracy": self.base_accuracy,
                "rows": [dataclasses.asdict(r) for r in self.rows]}

    def to_markdown(self) -> str:
        lines = ["| attribute | mean drop of p(pred) | s.e. | flip rate | n |",
                 "|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r.attribute} | {r.mean_drop:.3f} | {r.sem:.3f} | "
                         f"{r.flip_rate:.2f} | {r.n} |")
        return "\n".join(lines)


def _probs(logits_fn: Callable[[np.ndarray], Any], images: np.ndarray,
           batch: int) -> np.ndarray:
    out = []
    for i in range(0, len(images), batch):
        z = np.asarray(logits_fn(images[i:i + batch]), np.float64)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        out.append(p / p.sum(axis=1, keepdims=True))
    return np.concatenate(out)


def measure_interventions(logits_fn: Callable[[np.ndarray], Any], attrs: WorldAttrs,
                          seed_or_key: Any, *, render_seed: int = 0, image_size: int = 64,
                          attributes: Sequence[str] = INTERVENABLE, repeats: int = 1,
                          labels: np.ndarray | None = None,
                          batch: int = 256) -> InterventionTable:
    """Per-attribute effect of resampling on a classifier's predicted-class probability.

    Args:
      logits_fn: images float32 [B, S, S, 3] in [0, 1] -> logits [B, C] (e.g. a jitted
        ``lambda x: clf.logits(variables, x)``).
      attrs: N held-out records.
      seed_or_key: int seed / JAX key / numpy Generator for the resampled values.
      render_seed: the seed passed to :func:`~texter_jax.world.generator.render`, the
        same for original and intervened images so only the attribute changes.
      image_size: S.
      attributes: attributes to intervene on (default: all of :data:`INTERVENABLE`).
      repeats: independent resamples per image and attribute (drops are averaged).
      labels: optional int [N] true labels, to report the original accuracy.
      batch: images per ``logits_fn`` call.

    Returns:
      An :class:`InterventionTable`; ``table.critical`` is the measured truth.
    """
    rng = as_numpy_rng(seed_or_key)
    images = render(attrs, render_seed, image_size=image_size).astype(np.float32) / 255.0
    p0 = _probs(logits_fn, images, batch)
    pred = p0.argmax(axis=1)
    idx = np.arange(len(attrs))
    rows, drops = [], {}
    for a in attributes:
        d, flips = np.zeros(len(attrs)), np.zeros(len(attrs))
        all_d = []
        for _ in range(repeats):
            moved = resample_attribute(rng, attrs, a)
            x = render(moved, render_seed, image_size=image_size).astype(np.float32) / 255.0
            p1 = _probs(logits_fn, x, batch)
            dd = p0[idx, pred] - p1[idx, pred]
            d += dd / repeats
            flips += (p1.argmax(axis=1) != pred) / repeats
            all_d.append(dd)
        all_d = np.concatenate(all_d)
        drops[a] = d.astype(np.float32)
        rows.append(InterventionRow(
            attribute=a, mean_drop=float(all_d.mean()),
            sem=float(all_d.std(ddof=1) / np.sqrt(len(all_d))) if len(all_d) > 1 else 0.0,
            flip_rate=float(flips.mean()), n=len(all_d)))
    rows.sort(key=lambda r: -r.mean_drop)
    acc = None if labels is None else float(np.mean(pred == np.asarray(labels)))
    return InterventionTable(rows=tuple(rows), drops=drops, base_accuracy=acc)


def truth_values(table_or_attribute: InterventionTable | str | Sequence[str],
                 attrs: WorldAttrs) -> list[tuple[tuple[str, str], ...]]:
    """Per image, the (attribute, value) pairs an explanation must name to hit.

    Args:
      table_or_attribute: a table (its ``critical`` attribute is used), one attribute
        name, or several names (a classifier relying on more than one attribute: naming
        any of them counts).
      attrs: the N explained images' records.

    Returns:
      N tuples of ``(attribute, value name)`` pairs, e.g. ``(("background", "grass"),)``.
      Continuous attributes (position, rotation) have no value name and are skipped.
    """
    if isinstance(table_or_attribute, InterventionTable):
        names = [table_or_attribute.critical]
    elif isinstance(table_or_attribute, str):
        names = [table_or_attribute]
    else:
        names = list(table_or_attribute)
    names = [a for a in names if a in DISCRETE]
    values = {a: attrs.values(a) for a in names}
    return [tuple((a, values[a][i]) for a in names) for i in range(len(attrs))]
