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
from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from texter_jax import mapping
from texter_jax.aligner import Aligner
from texter_jax.batching import host_read, local_placement
from texter_jax.classifier_check import check_classifier
from texter_jax.config import PRESETS, ExplainConfig, MacoConfig
from texter_jax.emphasis import (
    MacoResult,
    default_spectrum,
    features_objective,
    logits_objective,
    maco_batch_with_retry,
    sae_objective,
)
from texter_jax.programs import baseline_program, retrieve_program, stage1_program, stage3_program
from texter_jax.sae import Sae, sae_encode
from texter_jax.stages import (
    UNIT_SELECTORS,
    Contributions,
    Prediction,
    contributions,
    embed_concept_images,
    predict,
    select_units,
    text_to_concept,
    text_to_concept_embeddings,
)
from texter_jax.types import Array, ClassifierLike, PRNGKey, Variables

# The settings and the stages are re-exported: here is where users look for them.
__all__ = [
    "KEY_TAGS", "PRESETS", "UNIT_SELECTORS", "Contributions", "ExplainConfig", "Explanation",
    "ExplanationArrays", "explain_arrays",
    "MacoConfig", "Prediction", "contributions", "embed_concept_images",
    "explain_batch", "fold_keys", "image_keys", "predict",
    "read_canvases_jit", "select_units", "text_to_concept", "text_to_concept_batch",
    "text_to_concept_embed_batch", "text_to_concept_embeddings",
]

#: ``fold_in`` tags of an image's key: what each random stream of its explanation derives
#: from. "another_seed" is a whole second stream (the seed floor of the sanity checks):
#: fold it into the image keys first, then explain as usual.
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



read_canvases_jit = functools.partial(jax.jit, static_argnames=(
    "classifier", "n_crops", "whole"))(mapping.read_canvases)


def image_keys(seed: int, indices) -> Array:
    """Per-image PRNG keys [B] from a run seed and each image's global index, so an
    image's explanation does not depend on which batch it falls in."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices, jnp.uint32))


def fold_keys(keys: PRNGKey, tag: str) -> PRNGKey:
    """``fold_in(keys[b], KEY_TAGS[tag])`` for every image key [B]."""
    return jax.vmap(lambda k: jax.random.fold_in(k, KEY_TAGS[tag]))(keys)


def explain_batch(classifier: ClassifierLike, variables: Variables, aligner: Aligner,
                  text_emb: Array, images, keys: PRNGKey, config: ExplainConfig,
                  *, sae: Sae | None = None, magnitude=None, class_idx=None,
                  units: str = "ig", reader_variables: Variables | None = None,
                  progress: Callable[[int], None] | None = None) -> Explanation:
    """TEXTER for a batch of images, split over ``jax.local_devices()`` along the batch.

    Every stage runs split over the devices (weights replicated) and passes its outputs
    to the next as device arrays (:func:`explain_arrays`); the host reads only each
    retry round's [B] mask and the final result (see :mod:`texter_jax.programs`).

    Args:
      classifier, variables: the classifier to explain.
      aligner: features -> CLIP image space.
      text_emb: float32 [T, E] CLIP text embeddings of a concept bank shared by the
        batch, or None (per-image banks: score ``crop_embeddings`` afterwards).
      images: float32 [B, H, W, 3] in [0, 1] at the classifier's input size (host or
        device array).
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
      progress: ``listener(steps_done)`` for MACO's steps (reported every
        :func:`~texter_jax.emphasis.progress.report_every` steps; each retry round
        reports anew). None compiles MACO without any host callback.

    Returns:
      :class:`Explanation` of host arrays for the B images. A row without any unit to
      emphasise (no active SAE code, e.g. under a randomised model) emphasises unit 0
      and reports no unit.
    """
    arrays = explain_arrays(classifier, variables, aligner, text_emb, images, keys, config,
                            sae=sae, magnitude=magnitude, class_idx=class_idx, units=units,
                            reader_variables=reader_variables, progress=progress)
    # The final read: what the Explanation holds (not z, nor every unit's score).
    host = host_read(arrays._replace(pred=arrays.pred._replace(z=None),
                                     contrib=arrays.contrib._replace(scores=None),
                                     retries=None))
    return _explanation(host, arrays.retries, config, len(keys))


class ExplanationArrays(NamedTuple):
    """:func:`explain_arrays`'s device results, each split along the (padded) batch.

    pred: :class:`Prediction`; contrib: :class:`Contributions`; maco:
    :class:`~texter_jax.emphasis.MacoResult`; n_units int [B]; crop_embeddings
    [B, C, E]; crop_logits [B, C, K]; concept_scores [B, T] or None; retries: host int
    [B]. Rows past the real batch repeat the last image.
    """

    pred: Prediction
    contrib: Contributions
    maco: MacoResult
    n_units: Array
    crop_embeddings: Array
    crop_logits: Array
    concept_scores: Array | None
    retries: np.ndarray | None


def explain_arrays(classifier: ClassifierLike, variables: Variables, aligner: Aligner,
                   text_emb: Array, images, keys: PRNGKey, config: ExplainConfig,
                   *, sae: Sae | None = None, magnitude=None, class_idx=None,
                   units: str = "ig", reader_variables: Variables | None = None,
                   progress: Callable[[int], None] | None = None) -> ExplanationArrays:
    """The device part of :func:`explain_batch` (same arguments): the stages' outputs
    as device arrays split along the batch, padded to a multiple of the local device
    count. Nothing is read to the host but each retry round's [B] mask. The classifier is
    first traced against the other parts (:func:`~texter_jax.classifier_check.
    check_classifier`), which also resolves ``config.maco.crop_size`` None."""
    chex.assert_rank(images, 4)
    size = classifier.image_size
    if tuple(images.shape[1:]) != (size, size, 3):
        raise ValueError(f"images must be [B, {size}, {size}, 3] in [0, 1], got {images.shape}")
    if config.use_sae and sae is None:
        raise ValueError("config.use_sae is True but no SAE was given (pass sae= or "
                         "use_sae=False)")
    if len(keys) != images.shape[0]:
        raise ValueError(f"{len(keys)} keys for {images.shape[0]} images")
    config = check_classifier(classifier, variables, aligner=aligner,
                              sae=sae if config.use_sae else None, config=config)
    placement = local_placement()
    if magnitude is None:
        magnitude = default_spectrum(config.maco.canvas)
    images, _ = placement.pad(jnp.asarray(images, jnp.float32))
    keys, _ = placement.pad(keys)
    if class_idx is not None:
        class_idx = placement.pad(jnp.asarray(class_idx, jnp.int32))[0]
    x, keys, class_idx = placement.put_batch((images, keys, class_idx))
    use_sae = config.use_sae and sae is not None
    # The artefacts travel whole (pytrees); the aligner bare, so its metrics do not
    # become part of stage 3's compiled identity.
    variables, sae, magnitude, aligner = placement.put_replicated(
        (variables, sae if use_sae else None, jnp.asarray(magnitude, jnp.float32),
         aligner.bare()))
    pred, contrib = stage1_program(placement)(
        variables, sae, x, class_idx, fold_keys(keys, "random_units"),
        classifier=classifier, steps=config.ig_steps, method=config.ig_method,
        ranked=config.ranked_units, ranking=config.unit_ranking, selector=units)
    valid = contrib.ranked_valid
    if config.objective == "class_logit":
        objective = logits_objective(classifier, variables,
                                     compute_dtype=config.compute_dtype)
        target = pred.label if class_idx is None else class_idx
        maco_ids, maco_valid, k_start = target[:, None], None, 1
    else:
        if use_sae:
            objective = sae_objective(classifier, variables, sae_encode, sae.params,
                                      top_k=sae.top_k, compute_dtype=config.compute_dtype)
        else:
            objective = features_objective(classifier, variables,
                                           compute_dtype=config.compute_dtype)
        maco_ids, maco_valid = _maco_units(contrib.ranked_ids, valid)
        k_start = config.k_neu
    result, info = maco_batch_with_retry(objective, fold_keys(keys, "maco"), magnitude,
                                         config.maco, maco_ids, k_start, maco_valid,
                                         max_retries=config.max_retries,
                                         placement=placement, progress=progress)
    reader = variables if reader_variables is None else placement.put_replicated(
        reader_variables)
    crop_emb, crop_logits = stage3_program(placement)(
        reader, aligner, fold_keys(keys, "crops"), result.image, result.transparency,
        classifier=classifier, n_crops=config.map_crops, whole=config.map_whole_canvas)
    scores = None if text_emb is None else retrieve_program(placement)(
        crop_emb, placement.put_replicated(jnp.asarray(text_emb, jnp.float32)))
    if config.objective == "class_logit":  # report the units stage 1 selected
        n_units = jnp.minimum(config.k_neu, jnp.sum(valid, axis=1))
    else:
        n_units = info.n_units
    return ExplanationArrays(pred, contrib, result, n_units, crop_emb, crop_logits, scores,
                             info.retries)


def _maco_units(ranked_ids: Array, valid: Array) -> tuple[Array, Array]:
    """MACO's unit ids and mask from stage 1's ranking. Slots without a unit (fewer
    active codes than R) still need a valid index to gather; they are masked out of the
    objective. A row with none emphasises unit 0."""
    none = ~jnp.any(valid, axis=1)
    return jnp.where(valid, ranked_ids, 0), valid.at[:, 0].set(valid[:, 0] | none)


def _explanation(host: ExplanationArrays, retries: np.ndarray, config: ExplainConfig,
                 n_real: int) -> Explanation:
    """The host-side :class:`Explanation` from the final read of the device results."""
    pred, contrib, maco = host.pred, host.contrib, host.maco
    n_units, valid = host.n_units.astype(np.int64), contrib.ranked_valid
    slot = np.arange(config.ranked_units)[None, :] < n_units[:, None]
    width = max(config.k_neu, int(n_units.max()))
    unit_ids = np.where(slot & valid, contrib.ranked_ids, -1)[:, :width]
    unit_scores = np.where(slot & valid, contrib.ranked_scores, 0.0)[:, :width]
    prob = np.take_along_axis(pred.probs, pred.label[:, None], axis=1)[:, 0]
    out = Explanation(pred.label, prob, unit_ids, unit_scores, n_units, retries,
                      maco.image, maco.transparency, maco.objective_trace,
                      host.crop_embeddings, host.concept_scores,
                      np.argmax(host.crop_logits, axis=-1).astype(np.int32))
    return Explanation(*(None if a is None else a[:n_real] for a in out))


def text_to_concept_embed_batch(classifier: ClassifierLike, variables: Variables,
                                aligner: Aligner, images) -> tuple[np.ndarray, ...]:
    """Text-to-Concept's image side for a batch, one classifier pass (padded, split over
    this process's devices).

    Returns:
      ``(label [B], prob [B], embeddings [B, 1, E])`` as host arrays.
    """
    check_classifier(classifier, variables, aligner=aligner, caller="text_to_concept")
    placement = local_placement()
    images, n_real = placement.pad(jnp.asarray(images, jnp.float32))
    variables, aligner = placement.put_replicated((variables, aligner.bare()))
    pred, emb = baseline_program(placement)(variables, aligner, placement.put_batch(images),
                                            classifier=classifier)
    label, probs, emb = host_read((pred.label, pred.probs, emb))
    prob = np.take_along_axis(probs, label[:, None], axis=1)[:, 0]
    return label[:n_real], prob[:n_real], emb[:n_real]


def text_to_concept_batch(classifier: ClassifierLike, variables: Variables, aligner: Aligner,
                          text_emb: Array, images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Text-to-Concept baseline for a batch, scored against one text bank.

    Returns:
      ``(label [B], prob [B], concept_scores [B, T])`` as host arrays.
    """
    label, prob, emb = text_to_concept_embed_batch(classifier, variables, aligner, images)
    return label, prob, np.asarray(mapping.retrieve(jnp.asarray(emb), jnp.asarray(text_emb)))
