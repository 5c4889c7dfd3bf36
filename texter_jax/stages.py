"""TEXTER's stages as pure functions: prediction, contributions (stage 1), reading
concept images (stage 3's image side) and the Text-to-Concept baseline.

Shapes: B images, D classifier features, n SAE codes, R ranked units, S canvas,
C stage-3 crops, E CLIP embedding size. :mod:`texter_jax.explain` composes them (with
MACO, :mod:`texter_jax.emphasis`) into :func:`~texter_jax.explain.explain_batch`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from texter_jax import mapping
from texter_jax.aligner import Aligner, align
from texter_jax.contributions import ig_features, ig_sae_codes, random_units, top_units
from texter_jax.sae import Sae, sae_encode
from texter_jax.types import Array, ClassifierLike, PRNGKey, Variables

# How stage 1 picks units: integrated gradients (TEXTER), or uniformly at random from the
# active pool (the "random units" sanity reference).
UNIT_SELECTORS = ("ig", "random")


class Prediction(NamedTuple):
    """Classifier outputs. z: [B, D]; logits: [B, C]; probs: [B, C]; label: int32 [B]."""

    z: Array
    logits: Array
    probs: Array
    label: Array


class Contributions(NamedTuple):
    """Stage 1. scores: [B, U] attributions (U = n with SAE, D without); ranked_ids /
    ranked_scores: [B, R] units best first; ranked_valid: bool [B, R]."""

    scores: Array
    ranked_ids: Array
    ranked_scores: Array
    ranked_valid: Array



def predict(classifier: ClassifierLike, variables: Variables, images: Array) -> Prediction:
    """images float32 [B, H, W, 3] in [0, 1] -> features, logits, softmax, argmax."""
    z = classifier.features(variables, images)
    logits = classifier.head(variables, z)
    return Prediction(z, logits, jax.nn.softmax(logits, axis=-1),
                      jnp.argmax(logits, axis=-1).astype(jnp.int32))


def contributions(classifier: ClassifierLike, variables: Variables, z: Array, class_idx: Array,
                  sae: Sae | None, *, steps: int, method: str, ranked: int,
                  ranking: str = "abs", chunk: int | None = None,
                  unroll: bool = False) -> Contributions:
    """Stage 1: IG of ``F_c`` over features (sae None) or TopK SAE codes.

    Args:
      z: float32 [B, D] features; class_idx: int [B] target classes.
      ranked: R, the number of ranked units returned.
      ranking: ``"abs"`` (release) or ``"signed"``, see :class:`ExplainConfig`.
      chunk: IG nodes per scan step (:func:`~texter_jax.contributions.default_chunk`).
      unroll: write IG's scan out (for cost analysis).
    """
    head = functools.partial(classifier.head, variables)
    if sae is None:
        scores = ig_features(head, z, class_idx, steps=steps, method=method, chunk=chunk,
                             unroll=unroll)
        active = None
    else:
        _, codes = sae_encode(sae.params, z, sae.top_k)
        scores = ig_sae_codes(head, sae.params, codes, class_idx, steps=steps, method=method,
                              chunk=chunk, unroll=unroll)
        active = codes != 0  # the release ranks only the codes that fired
    ids, vals = top_units(scores, ranked, active)
    if ranking == "signed":
        positive = scores > 0 if active is None else active & (scores > 0)
        s_ids, s_vals = top_units(scores, ranked, positive, by="signed")
        # A row with no positive contribution keeps the |score| ranking.
        has = (s_ids[:, :1] >= 0)
        ids, vals = jnp.where(has, s_ids, ids), jnp.where(has, s_vals, vals)
    return Contributions(scores, ids, vals, ids >= 0)


def select_units(classifier: ClassifierLike, variables: Variables, z: Array, class_idx: Array,
                 sae: Sae | None, keys: PRNGKey, *, selector: str, steps: int, method: str,
                 ranked: int, ranking: str = "abs", chunk: int | None = None,
                 unroll: bool = False) -> Contributions:
    """Stage 1 with a choice of selector (see :data:`UNIT_SELECTORS`).

    ``"ig"`` is :func:`contributions`. ``"random"`` draws R units per row uniformly from
    its pool (the active SAE codes, or every feature), row b from ``keys[b]`` [B]; its
    scores are zeros (nothing is attributed).
    """
    if selector == "ig":
        return contributions(classifier, variables, z, class_idx, sae, steps=steps,
                             method=method, ranked=ranked, ranking=ranking, chunk=chunk,
                             unroll=unroll)
    if selector != "random":
        raise ValueError(f"unit selector must be one of {UNIT_SELECTORS}, got {selector!r}")
    if sae is None:
        active = jnp.ones(z.shape, bool)
    else:
        active = sae_encode(sae.params, z, sae.top_k)[1] != 0
    ids, valid = jax.vmap(lambda k, a: random_units(k, a[None], ranked))(keys, active)
    ids, valid = ids[:, 0], valid[:, 0]
    zeros = jnp.zeros(ids.shape, jnp.float32)
    return Contributions(jnp.zeros(active.shape, jnp.float32), ids, zeros, valid)


def embed_concept_images(classifier: ClassifierLike, variables: Variables, aligner: Aligner,
                         keys: PRNGKey, images: Array, transparency: Array, *,
                         n_crops: int, whole: bool = False,
                         unroll: bool = False) -> tuple[Array, Array]:
    """Stage 3 image side: blend, crop, classifier features, aligner.

    Args:
      keys: [B] PRNG keys, one per image (crop positions).
      images: float32 [B, S, S, 3] MACO images; transparency: [B, S, S, 3].
      whole: also read the whole blended canvas (see :func:`texter_jax.mapping.read_canvases`).
      unroll: write the percentiles' loops out (for cost analysis).
    Returns:
      ``(embeddings float32 [B, C, E], logits [B, C, K])``: aligned (not yet normalised)
      embeddings and the classifier's logits of the C views (n_crops, + 1 with whole).
    """
    blended = jax.vmap(functools.partial(mapping.postprocess_concept_image, unroll=unroll))(
        images, transparency)
    return mapping.read_canvases(classifier, variables, aligner.w, aligner.b, keys, blended,
                                 n_crops=n_crops, whole=whole)


def text_to_concept(classifier: ClassifierLike, variables: Variables, aligner: Aligner,
                    images: Array) -> tuple[Prediction, Array]:
    """The Text-to-Concept baseline's image side with the prediction, one classifier pass.

    images float32 [B, H, W, 3] in [0, 1] -> ``(Prediction, embeddings [B, 1, E])``: the
    global features through the aligner (one "crop": the image itself).
    """
    pred = predict(classifier, variables, images)
    return pred, align(aligner.w, aligner.b, pred.z)[:, None, :]


def text_to_concept_embeddings(classifier: ClassifierLike, variables: Variables,
                               aligner: Aligner, images: Array) -> Array:
    """:func:`text_to_concept` without the prediction: [B, H, W, 3] -> [B, 1, E]."""
    return text_to_concept(classifier, variables, aligner, images)[1]


