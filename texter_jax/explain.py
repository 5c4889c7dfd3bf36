"""TEXTER end to end, batched: contributions -> emphasis -> mapping -> retrieval.

:func:`explain_batch` composes the pure stages (:mod:`texter_jax.stages`, MACO from
:mod:`texter_jax.emphasis`) for a batch of B images that each carry their own class and
unit set, with jit at the edges and the batch sharded over the local devices. Shapes
below: B images, D classifier features, n SAE codes, k selected units, S MACO canvas,
C stage-3 crops, E CLIP embedding size, T concept texts.

References:
  Yamauchi, Kera, Kawamoto. Zero-Shot Textual Explanations via Translating
  Decision-Critical Features. arXiv:2512.07245.
  Moayeri et al. Text-To-Concept (and Back) via Cross-Model Alignment. ICML 2023.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from texter_jax import mapping
from texter_jax.aligner import Aligner
from texter_jax.batching import batch_sharding, pad_batch, shard
from texter_jax.classifier import Classifier
from texter_jax.config import PRESETS, ExplainConfig, MacoConfig
from texter_jax.emphasis import (default_spectrum, features_objective, logits_objective,
                                 maco_batch_with_retry, sae_objective)
from texter_jax.sae import Sae, sae_encode
from texter_jax.stages import (UNIT_SELECTORS, Contributions, Prediction,
                               contributions, embed_concept_images, predict, select_units,
                               text_to_concept, text_to_concept_embeddings)
from texter_jax.types import Array, PRNGKey, Variables

# The settings and the stages are re-exported: here is where users look for them.
__all__ = [
    "KEY_TAGS", "PRESETS", "UNIT_SELECTORS", "Contributions", "ExplainConfig", "Explanation",
    "MacoConfig", "Prediction", "contributions", "embed_concept_images",
    "embed_concept_images_jit", "explain_batch", "fold_keys", "image_keys", "predict",
    "read_canvases_jit", "select_units", "text_to_concept", "text_to_concept_batch",
    "text_to_concept_embed_batch", "text_to_concept_embeddings",
]

# ``fold_in`` tags of an image's key: what each random stream of its explanation derives
# from. "another_seed" is a whole second stream (the seed floor of the sanity checks):
# fold it into the image keys first, then explain as usual.
KEY_TAGS = {"maco": 0, "crops": 1, "random_units": 2, "another_seed": 3}


class Explanation(NamedTuple):
    """Everything :func:`explain_batch` computes for B images (host numpy arrays).

    label [B], prob [B], unit_ids [B, k] (-1 = unused slot), unit_scores [B, k],
    n_units [B] (units finally emphasised, after retries), retries [B],
    concept_image [B, S, S, 3] in (0, 1), transparency [B, S, S, 3],
    objective_trace [B, steps], crop_embeddings [B, C, E] (aligned, unnormalised
    embeddings of the C concept-image crops; C + 1 with ``map_whole_canvas``, the whole
    canvas last), concept_scores [B, T] (None when no text embeddings were given;
    :func:`texter_jax.mapping.retrieve` of crop_embeddings), crop_labels int [B, C]
    (the classifier's class for each of those views: how often it is ``label`` is the
    concept image's class consistency).
    """

    label: np.ndarray
    prob: np.ndarray
    unit_ids: np.ndarray
    unit_scores: np.ndarray
    n_units: np.ndarray
    retries: np.ndarray
    concept_image: np.ndarray
    transparency: np.ndarray
    objective_trace: np.ndarray
    crop_embeddings: np.ndarray
    concept_scores: np.ndarray | None
    crop_labels: np.ndarray



@functools.partial(jax.jit, static_argnames=("classifier", "steps", "method", "ranked",
                                              "use_sae", "top_k", "ranking", "selector"))
def _stage1(classifier, variables, sae_params, images, class_idx, unit_keys, *, steps,
            method, ranked, use_sae, top_k, ranking, selector):
    pred = predict(classifier, variables, images)
    sae = Sae(sae_params, top_k) if use_sae else None
    target = pred.label if class_idx is None else class_idx
    contrib = select_units(classifier, variables, pred.z, target, sae, unit_keys,
                           selector=selector, steps=steps, method=method, ranked=ranked,
                           ranking=ranking)
    return pred, contrib


@functools.partial(jax.jit, static_argnames=("classifier", "n_crops", "whole"))
def embed_concept_images_jit(classifier, variables, w, b, keys, images, transparency, *,
                             n_crops, whole=False):
    """Jitted :func:`embed_concept_images` with the aligner passed as arrays (w, b)."""
    return embed_concept_images(classifier, variables, Aligner(w, b), keys, images,
                                transparency, n_crops=n_crops, whole=whole)


read_canvases_jit = functools.partial(jax.jit, static_argnames=(
    "classifier", "n_crops", "whole"))(mapping.read_canvases)


@functools.partial(jax.jit, static_argnames=("classifier",))
def _baseline(classifier, variables, w, b, images):
    return text_to_concept(classifier, variables, Aligner(w, b), images)


def image_keys(seed: int, indices) -> Array:
    """Per-image PRNG keys [B] from a run seed and each image's global index, so an
    image's explanation does not depend on which batch it falls in."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices, jnp.uint32))


def fold_keys(keys: PRNGKey, tag: str) -> PRNGKey:
    """``fold_in(keys[b], KEY_TAGS[tag])`` for every image key [B]."""
    return jax.vmap(lambda k: jax.random.fold_in(k, KEY_TAGS[tag]))(keys)


def explain_batch(classifier: Classifier, variables: Variables, aligner: Aligner,
                  text_emb: Array, images, keys: PRNGKey, config: ExplainConfig,
                  *, sae: Sae | None = None, magnitude=None, class_idx=None,
                  units: str = "ig", reader_variables: Variables | None = None
                  ) -> Explanation:
    """TEXTER for a batch of images, sharded over ``jax.local_devices()`` along the batch.

    Args:
      classifier, variables: the classifier to explain.
      aligner: features -> CLIP image space.
      text_emb: float32 [T, E] CLIP text embeddings of a concept bank shared by the
        batch, or None (per-image banks: score ``crop_embeddings`` afterwards).
      images: float32 [B, H, W, 3] in [0, 1] at the classifier's input size.
      keys: [B] PRNG keys, one per image (see :func:`image_keys`): MACO's phase and crops
        and stage 3's crops of image b derive from ``keys[b]`` alone (:data:`KEY_TAGS`).
      config: hyperparameters (release defaults).
      sae: the TopK SAE when ``config.use_sae``.
      magnitude: MACO magnitude template [3, S, S // 2 + 1]; default power law.
      class_idx: int [B], the class to explain; None explains each image's prediction.
        (``label``/``prob`` still report the prediction.)
      units: stage 1's selector, ``"ig"`` (TEXTER) or ``"random"`` (from
        ``fold_in(key, KEY_TAGS["random_units"])``; a sanity reference).
      reader_variables: the variables stage 3 reads the concept image with (default
        ``variables``); the sanity checks select and emphasise units with a randomised
        model and read with the real one, which the aligner was fitted to.

    Returns:
      :class:`Explanation` of host arrays for the B images. A row without any unit to
      emphasise (no active SAE code, e.g. under a randomised model) emphasises unit 0
      and reports no unit.
    """
    images = np.asarray(images, np.float32)
    chex.assert_rank(images, 4)
    size = classifier.image_size
    if images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must be [B, {size}, {size}, 3] in [0, 1], got {images.shape}")
    if config.use_sae and sae is None:
        raise ValueError("config.use_sae is True but no SAE was given (pass sae= or "
                         "use_sae=False)")
    if magnitude is None:
        magnitude = default_spectrum(config.maco.canvas)
    if len(keys) != images.shape[0]:
        raise ValueError(f"{len(keys)} keys for {images.shape[0]} images")
    images, n_real = pad_batch(images)
    keys, _ = pad_batch(keys)
    if class_idx is not None:
        class_idx = jnp.asarray(pad_batch(np.asarray(class_idx, np.int32))[0])
    sharding = batch_sharding(images.shape[0])
    x = shard(jnp.asarray(images), sharding)
    use_sae = config.use_sae and sae is not None
    ranked = config.ranked_units
    pred, contrib = _stage1(classifier, variables, sae.params if use_sae else None, x,
                            class_idx, fold_keys(keys, "random_units"),
                            steps=config.ig_steps, method=config.ig_method, ranked=ranked,
                            use_sae=use_sae, top_k=sae.top_k if use_sae else 0,
                            ranking=config.unit_ranking, selector=units)
    target = np.asarray(pred.label if class_idx is None else class_idx)
    ranked_ids = np.asarray(contrib.ranked_ids)
    valid = np.asarray(contrib.ranked_valid)
    if config.objective == "class_logit":
        objective = logits_objective(classifier, variables,
                                     compute_dtype=config.compute_dtype)
        maco_ids, maco_valid, k_start = target[:, None], None, 1
    else:
        if use_sae:
            objective = sae_objective(classifier, variables, sae_encode, sae.params,
                                      top_k=sae.top_k, compute_dtype=config.compute_dtype)
        else:
            objective = features_objective(classifier, variables,
                                           compute_dtype=config.compute_dtype)
        # Slots without a unit (fewer active codes than R) still need a valid index to
        # gather; they are masked out of the objective. A row with none emphasises unit 0.
        maco_valid = valid.copy()
        maco_valid[~valid.any(axis=1), 0] = True
        maco_ids, k_start = np.where(valid, ranked_ids, 0), config.k_neu
    result, info = maco_batch_with_retry(objective, fold_keys(keys, "maco"), magnitude,
                                         config.maco, maco_ids, k_start, maco_valid,
                                         max_retries=config.max_retries)
    crop_emb, crop_logits = embed_concept_images_jit(
        classifier, variables if reader_variables is None else reader_variables,
        jnp.asarray(aligner.w), jnp.asarray(aligner.b), fold_keys(keys, "crops"),
        shard(result.image, sharding), shard(result.transparency, sharding),
        n_crops=config.map_crops, whole=config.map_whole_canvas)
    scores = None if text_emb is None else np.asarray(
        mapping.retrieve(crop_emb, jnp.asarray(text_emb)))
    if config.objective == "class_logit":  # report the units stage 1 selected
        n_units = np.minimum(config.k_neu, valid.sum(axis=1))
    else:
        n_units = info.n_units
    slot = np.arange(ranked)[None, :] < n_units[:, None]
    width = max(config.k_neu, int(n_units.max()))
    unit_ids = np.where(slot & valid, ranked_ids, -1)[:, :width]
    unit_scores = np.where(slot & valid, np.asarray(contrib.ranked_scores), 0.0)[:, :width]
    label = np.asarray(pred.label)
    prob = np.take_along_axis(np.asarray(pred.probs), label[:, None], axis=1)[:, 0]
    out = Explanation(label, prob, unit_ids, unit_scores, n_units, info.retries,
                      np.asarray(result.image), np.asarray(result.transparency),
                      np.asarray(result.objective_trace), np.asarray(crop_emb), scores,
                      np.asarray(jnp.argmax(crop_logits, axis=-1)).astype(np.int32))
    return Explanation(*(None if a is None else a[:n_real] for a in out))


def text_to_concept_embed_batch(classifier: Classifier, variables: Variables,
                                aligner: Aligner, images) -> tuple[np.ndarray, ...]:
    """Text-to-Concept's image side for a batch, one classifier pass (padded, sharded).

    Returns:
      ``(label [B], prob [B], embeddings [B, 1, E])`` as host arrays.
    """
    images = np.asarray(images, np.float32)
    images, n_real = pad_batch(images)
    x = shard(jnp.asarray(images), batch_sharding(images.shape[0]))
    pred, emb = _baseline(classifier, variables, jnp.asarray(aligner.w),
                          jnp.asarray(aligner.b), x)
    label = np.asarray(pred.label)
    prob = np.take_along_axis(np.asarray(pred.probs), label[:, None], axis=1)[:, 0]
    return label[:n_real], prob[:n_real], np.asarray(emb)[:n_real]


def text_to_concept_batch(classifier: Classifier, variables: Variables, aligner: Aligner,
                          text_emb: Array, images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Text-to-Concept baseline for a batch, scored against one text bank.

    Returns:
      ``(label [B], prob [B], concept_scores [B, T])`` as host arrays.
    """
    label, prob, emb = text_to_concept_embed_batch(classifier, variables, aligner, images)
    return label, prob, np.asarray(mapping.retrieve(jnp.asarray(emb), jnp.asarray(text_emb)))