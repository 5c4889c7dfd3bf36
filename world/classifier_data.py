"""The world classifiers' tasks, training settings and training data.

A task is a decision rule (:data:`TASKS`); its training set is rendered from records of
the task's world through augmentation views that still show the label
(:func:`training_views`), and a share of it is mosaics whose tiles all share the label's
value (:func:`training_mosaics`). Training itself: ``world/classifiers.py``.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from texter_jax.world.attributes import DISCRETE, WORLD_VERSION, WorldAttrs, sample_attributes
from texter_jax.world.mosaics import mosaic_visible, render_mosaics, sample_mosaics
from texter_jax.world.views import sample_views, visible_attributes


@dataclasses.dataclass(frozen=True)
class Task:
    """A decision rule: the label attribute and optional training-set constraints."""

    label: str
    # Training-set constraint tying background to the label (planted shortcut).
    tie_background: bool = False
    # Passes over the training set, as a multiple of ClassifierTrainConfig.epochs.
    epoch_scale: float = 1.0


TASKS: dict[str, Task] = {
    # Shape is the slow attribute for a CNN too. Measured (8,000 images, batch 64):
    # held-out accuracy 0.80 after 3 epochs, 0.955 after 5 (whole images only); 0.969
    # after 5 with views and auxiliary heads (4 epochs: 0.927 for seed 0, 0.835 for
    # seed 1); colour is 1.00 after 1.
    "shape": Task("shape", epoch_scale=5.0),
    "shape_shortcut": Task("shape", tie_background=True),
    "colour": Task("colour"),
    # A 9-px cue under global average pooling is slow to find: measured (8,000 images,
    # batch 64, no auxiliary heads) held-out accuracy 0.45 after 2 epochs, 0.87 after
    # 2.5, 0.95 after 4.
    "badge": Task("badge", epoch_scale=3.5),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassifierTrainConfig:
    """Hyperparameters shared by the world classifiers.

    Attributes:
      image_size: S of the rendered images.
      widths, depths, stem_width: ResNet architecture (basic blocks).
      train_images: rendered training images per distinct training set.
      test_images: held-out images (independent attributes) for accuracy.
      intervention_images: held-out images for the intervention table.
      epochs: passes over the training set.
      batch: images per step. WORLD_NOTES found batch 16 faster per wall second for its
        CNN; for this ResNet on label = shape, batch 64 learned more per image seen
        (0.85 held-out at 19k images vs 0.50 at 16k with batch 16) at equal CPU cost
        per image, so we use 64.
      lr, weight_decay: AdamW; the learning rate decays by cosine to 5%.
      views: ``(kind, weight)`` mix of training views (augmentation); a view that would
        hide the label's attribute is replaced by the whole image.
      extra_mosaics: mosaics whose tiles share the label's value (label = that value; see
        :func:`training_mosaics`), added to the ``train_images`` ordinary images, as a
        share of them (0 for none); training steps grow with them. Measured (seed 0,
        demo defaults, 2026-12-07): *replacing* 15 % of the ordinary images by mosaics
        instead cost held-out accuracy on ordinary scenes (shape 0.964 -> 0.941, badge
        0.886 -> 0.758).
      aux_weight: weight of auxiliary heads that predict, from the same features, every
        other attribute the view shows (0 disables them). Real classifiers are trained
        on many classes, so their features describe much more than their decision; a
        six-way classifier trained alone keeps little but its label, so the aligner
        cannot map its features to CLIP and Text-to-Concept on it sees only the label's
        attribute. Measured on the shape classifier (2026-11-30): aligner held-out R^2
        0.55 without the heads, 0.73 at 0.1, 0.77 at 0.5; test accuracy 0.962, 0.966,
        0.82 (0.5 starves the task in the demo's training budget). The heads are dropped
        after training: the classifier is its backbone and its task head, and what it
        relies on is still measured by intervention.
      noise_std: Gaussian pixel noise added to training images (augmentation), 0 for none.
      world_version: the world's version (a cache from another world is not reused).
      seed: root seed.
    """

    image_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128)
    depths: tuple[int, ...] = (1, 1, 1)
    stem_width: int = 16
    train_images: int = 8000
    test_images: int = 1000
    intervention_images: int = 200
    epochs: float = 1.0
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    views: tuple[tuple[str, float], ...] = (("whole", 0.5), ("close", 0.25), ("wide", 0.1),
                                            ("partial", 0.15))
    extra_mosaics: float = 0.15
    aux_weight: float = 0.1
    noise_std: float = 0.0
    world_version: int = WORLD_VERSION
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "views", tuple((str(k), float(w)) for k, w in self.views))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def training_attrs(task: Task, seed: int, n: int) -> WorldAttrs:
    """Training records of a task (the shortcut ties background index to shape index)."""
    constraints = {"background": lambda a: a["shape"]} if task.tie_background else None
    return sample_attributes(seed, n, constraints=constraints)


def training_views(task: Task, attrs: WorldAttrs, cfg: ClassifierTrainConfig,
                   seed: int) -> np.ndarray:
    """Augmentation views [N, 3] for training records: drawn from ``cfg.views``; where a
    view would not show the label's attribute, the whole image instead."""
    views = sample_views(seed, attrs, cfg.views)
    shows = visible_attributes(attrs, views, cfg.image_size)[:, list(DISCRETE).index(task.label)]
    views[~shows] = np.array([0.5, 0.5, 1.0], np.float32)
    return views


def training_mosaics(task: Task, labels: np.ndarray, cfg: ClassifierTrainConfig,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mosaics for a task's training set: every tile shares the label's value.

    Tiles follow the task's training world (the shortcut ties each tile's background to
    its shape) and are drawn at scales where the label stays resolvable
    (:func:`texter_jax.world.mosaics.max_tiles`).

    Args:
      labels: int [M], the value each mosaic shares (its label).

    Returns:
      ``(images uint8 [M, S, S, 3], labels int32 [M], aux_labels int32 [M, A],
      aux_weights float32 [M, A])``: the auxiliary heads predict only the other values
      every tile in view shares (:func:`~texter_jax.world.mosaics.mosaic_visible`).
    """
    constraints = {"background": lambda a: a["shape"]} if task.tie_background else None
    m = sample_mosaics(seed, len(labels), cfg.image_size, shared=task.label, values=labels,
                       constraints=constraints)
    rec = m.records()
    aux_labels = np.stack([getattr(rec, a) for a in DISCRETE], axis=1).astype(np.int32)
    aux_weights = mosaic_visible(m).astype(np.float32)
    aux_weights[:, list(DISCRETE).index(task.label)] = 0.0
    return (render_mosaics(m, seed), m.shared_values(), aux_labels, aux_weights)
