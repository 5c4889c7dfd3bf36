"""Reader controls and concept-image diagnostics for the world demo.

Stage 3 of TEXTER reads random crops of a canvas through the classifier, the aligner
and the concept bank. If that reader cannot name the truth on canvases that plainly
show it, no TEXTER hit rate can be interpreted. The controls read, through the very
same crops (:func:`texter_jax.mapping.read_canvases`, no MACO, no post-processing):

* (a) each explained image tiled at crop scale over the canvas, the grid at a random
  offset (:func:`texter_jax.world.controls.tiled_inputs`): can the reader read this very
  image at the scale it reads concept images?
* (b) for every value of the classifier's critical attribute, canvases that show only
  that value at crop scale (:func:`texter_jax.world.controls.value_canvases`).

Each is scored like an explanation: hit@k against the (attribute, value) it shows. The
first control (a), the image upsampled to the canvas, is still read as a diagnostic
(``upsampled``), never as a gate: its crops show part of the object and miss the badge
by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from texter_jax import mapping
from texter_jax.eval.metrics.hits import hit_table, mean_ci
from texter_jax.explain import image_keys, read_canvases_jit
from texter_jax.world.attributes import DISCRETE
from texter_jax.world.controls import CONTROLLED, tiled_inputs, upsampled_inputs, value_canvases

# The reader passes a control at this hit@3.
CONTROL_BAR = 0.8


def read_scores(classifier, variables, aligner, text_emb, canvases: np.ndarray, *,
                n_crops: int, seed: int, batch: int = 16) -> np.ndarray:
    """Concept scores float32 [N, T] of canvases [N, S, S, 3] read through stage 3's crops."""
    out = []
    for s in range(0, len(canvases), batch):
        x = jnp.asarray(canvases[s:s + batch])
        keys = image_keys(seed, range(s, s + len(x)))
        emb, _ = read_canvases_jit(classifier, variables, jnp.asarray(aligner.w),
                                   jnp.asarray(aligner.b), keys, x, n_crops=n_crops)
        out.append(np.asarray(mapping.retrieve(emb, jnp.asarray(text_emb))))
    return np.concatenate(out)


def _rankings(scores: np.ndarray, phrases: Sequence[str]) -> list[list[str]]:
    order = np.argsort(-scores, axis=1, kind="stable")
    return [[phrases[j] for j in row] for row in order]


def reader_controls(classifier, variables, aligner, text_emb, phrases: Sequence[str],
                    meaning, images: np.ndarray, truths: Sequence, critical: str, *,
                    canvas: int, n_crops: int, per_value: int, seed: int) -> dict[str, Any]:
    """Both reader controls for one classifier.

    Args:
      images: the explained images [N, H, W, 3]; truths: their truth tuples.
      critical: the classifier's measured critical attribute.
      canvas, n_crops: stage 3's canvas side and crop count.
      per_value: value canvases per value of ``critical``.

    Returns:
      ``{"tiled": hit table (control a), "upsampled": hit table (diagnostic), "values":
      hit table or None (no value canvas for this attribute), "per_value": {value: hit@3
      rate}, "top3_tiled": [...], "top3_upsampled": [...]}``.
    """
    out: dict[str, Any] = {"values": None, "per_value": {}}
    for name, canvases in (("tiled", tiled_inputs(images, canvas, seed=[seed, 3])),
                           ("upsampled", upsampled_inputs(images, canvas))):
        scores = read_scores(classifier, variables, aligner, text_emb, canvases,
                             n_crops=n_crops, seed=seed + 1)
        ranks = _rankings(scores, phrases)
        out[name] = hit_table(ranks, truths, meaning, ks=(1, 3), seed=seed)
        out[f"top3_{name}"] = [r[:3] for r in ranks]
    if critical not in CONTROLLED:
        return out
    canvases, value_truths, names = [], [], []
    for v, value in enumerate(DISCRETE[critical]):
        canvases.append(value_canvases(critical, v, per_value, canvas, seed=[seed, v]))
        value_truths += [((critical, value),)] * per_value
        names += [value] * per_value
    scores = read_scores(classifier, variables, aligner, text_emb, np.concatenate(canvases),
                         n_crops=n_crops, seed=seed + 2)
    ranks = _rankings(scores, phrases)
    out["values"] = hit_table(ranks, value_truths, meaning, ks=(1, 3), seed=seed)
    hit3 = np.array([any(meaning.get(p) in t for p in r[:3])
                     for r, t in zip(ranks, value_truths, strict=True)])
    names = np.array(names)
    out["per_value"] = {value: float(hit3[names == value].mean())
                        for value in DISCRETE[critical]}
    out["top3_values"] = {value: ranks[int(np.flatnonzero(names == value)[0])][:3]
                          for value in DISCRETE[critical]}
    return out


def control_passed(controls: dict[str, Any], bar: float = CONTROL_BAR) -> bool:
    """Both controls, (a) tiled input and (b) value canvases, reach hit@3 >= bar (a
    missing value control counts as failed; the upsampled input is not a gate)."""
    if controls["values"] is None:
        return False
    return min(controls["tiled"]["hit@3"]["rate"], controls["values"]["hit@3"]["rate"]) >= bar


def class_consistency(crop_labels: np.ndarray, labels: np.ndarray, *, seed: int
                      ) -> dict[str, float]:
    """Share of concept-image crops the classifier assigns to the explained class.

    Args:
      crop_labels: int [N, C], the classifier's class of each stage-3 view.
      labels: int [N], the class each concept image explains.

    Returns:
      ``{"rate", "low", "high", "n"}``: mean over images of their crops' share, with a
      bootstrap 95 % CI over images.
    """
    per_image = np.mean(np.asarray(crop_labels) == np.asarray(labels)[:, None], axis=1)
    return mean_ci(per_image, seed=seed)

