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

Four more diagnostics say *where* a failing control fails, none of them a gate:

* the value read: on (a), whether the reader's best phrase among the critical
  attribute's values names the right one (it can read the value, other attributes aside);
* the world CLIP on the very same crops (:func:`texter_jax.mapping.crop_views` with the
  same keys), for (a) and (b): what the aligner's target itself names there;
* the world CLIP on the whole, plain images: how highly CLIP ranks the critical
  attribute among everything an image shows, with nothing cut or rescaled;
* how many of (a)'s crops show the critical attribute at all, by the rules the world's
  captions follow (:func:`texter_jax.world.controls.tiled_crop_visible`).
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
from texter_jax.world.clip_eval import embed_images
from texter_jax.world.controls import (
    CONTROLLED,
    tiled_crop_visible,
    tiled_inputs,
    upsampled_inputs,
    value_canvases,
)

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


def clip_read_scores(clip, clip_vars, text_emb, canvases: np.ndarray, *, n_crops: int,
                     size: int, seed: int, batch: int = 16) -> np.ndarray:
    """Concept scores float32 [N, T] of the world CLIP itself on exactly the crops
    :func:`read_scores` reads with the same ``seed`` (N canvases [N, S, S, 3])."""
    out = []
    for s in range(0, len(canvases), batch):
        x = jnp.asarray(canvases[s:s + batch])
        views = mapping.crop_views(image_keys(seed, range(s, s + len(x))), x,
                                   n_crops=n_crops, size=size)
        b, c = views.shape[:2]
        emb = embed_images(clip, clip_vars, np.asarray(views).reshape(b * c, size, size, 3))
        out.append(np.asarray(mapping.retrieve(jnp.asarray(emb.reshape(b, c, -1)),
                                               jnp.asarray(text_emb))))
    return np.concatenate(out)


def value_read(scores: np.ndarray, phrases: Sequence[str], meaning, truths: Sequence,
               attribute: str, *, seed: int) -> dict[str, float]:
    """Whether the best-scoring phrase *among one attribute's values* names the truth.

    Args:
      scores: float [N, T], one score per phrase of ``phrases``.
      meaning: phrase -> (attribute, value); truths: N tuples of (attribute, value).
      attribute: the attribute read (its other phrases and all other attributes ignored).

    Returns:
      ``{"rate", "low", "high", "n"}`` over the N rows (bootstrap 95 % CI).

    >>> s = np.array([[0.9, 0.2, 0.5], [0.9, 0.6, 0.1]])
    >>> m = {"grass": ("background", "grass"), "star": ("shape", "star"),
    ...      "circle": ("shape", "circle")}
    >>> t = [(("shape", "circle"),), (("shape", "circle"),)]
    >>> value_read(s, ["grass", "star", "circle"], m, t, "shape", seed=0)["rate"]
    0.5
    """
    cols = [j for j, p in enumerate(phrases) if meaning.get(p, ("",))[0] == attribute]
    if not cols:
        raise ValueError(f"no phrase of the concept bank names a {attribute!r} value")
    scores = np.asarray(scores)
    best = [meaning[phrases[cols[int(k)]]][1] for k in np.argmax(scores[:, cols], axis=1)]
    right = [dict(t).get(attribute) == b for t, b in zip(truths, best, strict=True)]
    return mean_ci(np.asarray(right, np.float64), seed=seed)


def _rankings(scores: np.ndarray, phrases: Sequence[str]) -> list[list[str]]:
    order = np.argsort(-scores, axis=1, kind="stable")
    return [[phrases[j] for j in row] for row in order]


def _tiling_seed(seed: int) -> list[int]:
    return [seed, 3]  # control (a)'s grid offsets


def _crop_seed(seed: int) -> int:
    return seed + 1  # control (a)'s crop keys (image_keys)


def tiled_crops_visible(attrs, *, canvas: int, n_crops: int, seed: int) -> np.ndarray:
    """What each crop control (a) reads shows by the world's rules, bool [N, C, A] for
    the N records ``attrs`` of the images :func:`reader_controls` gets with ``seed``
    (its tiling and crop keys; :func:`texter_jax.world.controls.tiled_crop_visible`)."""
    boxes = mapping.crop_boxes(image_keys(_crop_seed(seed), range(len(attrs))), n_crops)
    return tiled_crop_visible(attrs, canvas, np.asarray(boxes), seed=_tiling_seed(seed))


def reader_controls(classifier, variables, aligner, text_emb, phrases: Sequence[str],
                    meaning, images: np.ndarray, truths: Sequence, critical: str, *,
                    canvas: int, n_crops: int, per_value: int, seed: int,
                    clip=None, clip_vars=None, attrs=None) -> dict[str, Any]:
    """Both reader controls for one classifier, and the diagnostics of the module doc.

    Args:
      images: the explained images [N, H, W, 3]; truths: their truth tuples.
      critical: the classifier's measured critical attribute.
      canvas, n_crops: stage 3's canvas side and crop count.
      per_value: value canvases per value of ``critical``.
      clip, clip_vars: the world CLIP, for the CLIP diagnostics (left out without them).
      attrs: the images' records, for the share of (a)'s crops that show the critical
        attribute by the world's own rules (left out without them).

    Returns:
      ``{"tiled": hit table (control a), "upsampled": hit table (diagnostic), "values":
      hit table or None (no value canvas for this attribute), "per_value": {value: hit@3
      rate}, "top3_tiled": [...], "top3_upsampled": [...], "tiled_value_read": rate and
      CI}``, with a CLIP: ``"clip_tiled"``, ``"clip_whole"`` and ``"clip_values"`` (hit
      tables, the last None without value canvases); with records, ``"tiled_crops_show"``
      (per image the share of its crops that show the attribute, mean and CI).
    """
    out: dict[str, Any] = {"values": None, "per_value": {}}
    tiled = tiled_inputs(images, canvas, seed=_tiling_seed(seed))
    for name, canvases in (("tiled", tiled), ("upsampled", upsampled_inputs(images, canvas))):
        scores = read_scores(classifier, variables, aligner, text_emb, canvases,
                             n_crops=n_crops, seed=_crop_seed(seed))
        ranks = _rankings(scores, phrases)
        out[name] = hit_table(ranks, truths, meaning, ks=(1, 3), seed=seed)
        out[f"top3_{name}"] = [r[:3] for r in ranks]
        if name == "tiled":
            out["tiled_value_read"] = value_read(scores, phrases, meaning, truths, critical,
                                                 seed=seed)
    if attrs is not None:
        if len(attrs) != len(images):
            raise ValueError(f"attrs holds {len(attrs)} records for {len(images)} images")
        shows = tiled_crops_visible(attrs, canvas=canvas, n_crops=n_crops, seed=seed)
        out["tiled_crops_show"] = mean_ci(shows[..., list(DISCRETE).index(critical)]
                                          .mean(axis=1), seed=seed)
    size = classifier.image_size
    if clip is not None:
        crops = clip_read_scores(clip, clip_vars, text_emb, tiled, n_crops=n_crops,
                                 size=size, seed=_crop_seed(seed))
        out["clip_tiled"] = hit_table(_rankings(crops, phrases), truths, meaning, ks=(1, 3),
                                      seed=seed)
        whole = mapping.retrieve(jnp.asarray(embed_images(clip, clip_vars, images))[:, None],
                                 jnp.asarray(text_emb))
        out["clip_whole"] = hit_table(_rankings(np.asarray(whole), phrases), truths, meaning,
                                      ks=(1, 3), seed=seed)
        out["clip_values"] = None
    if critical not in CONTROLLED:
        return out
    canvases, value_truths, names = [], [], []
    for v, value in enumerate(DISCRETE[critical]):
        canvases.append(value_canvases(critical, v, per_value, canvas, seed=[seed, v]))
        value_truths += [((critical, value),)] * per_value
        names += [value] * per_value
    canvases = np.concatenate(canvases)
    scores = read_scores(classifier, variables, aligner, text_emb, canvases,
                         n_crops=n_crops, seed=seed + 2)
    ranks = _rankings(scores, phrases)
    out["values"] = hit_table(ranks, value_truths, meaning, ks=(1, 3), seed=seed)
    if clip is not None:
        crops = clip_read_scores(clip, clip_vars, text_emb, canvases, n_crops=n_crops,
                                 size=size, seed=seed + 2)
        out["clip_values"] = hit_table(_rankings(crops, phrases), value_truths, meaning,
                                       ks=(1, 3), seed=seed)
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

