"""Explanation producers for the evaluation runner.

The real methods go through the library unchanged: TEXTER through
:func:`texter_jax.explain.explain_batch`, Text-to-Concept through
:func:`texter_jax.explain.text_to_concept`. The sanity variants need what
``explain_batch`` does not expose -- explain a *given* class with a randomised model, or
emphasise given units -- so :func:`texter_variant` recomposes the same public stage
functions (``contributions``, MACO with retry, ``embed_concept_images``) with the same
per-image keys (``fold_in(key, 0)`` for MACO, ``fold_in(key, 1)`` for stage-3 crops). With
the real model and the predicted class it reproduces ``explain_batch`` (tested).

Every function takes and returns host arrays for B images and pads the batch to a
multiple of the device count, sharding it like ``explain_batch``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from eval.sanity import random_units
from texter_jax.emphasis import features_objective, maco_batch_with_retry, sae_objective
from texter_jax.batching import batch_sharding, pad_to_multiple
from texter_jax.explain import (Aligner, ExplainConfig, Sae, contributions,
                                explain_batch, text_to_concept)
# explain_batch's own jitted stage 3, so the variants reuse its compiled program.
from texter_jax.explain import embed_concept_images_jit
from texter_jax.sae import sae_encode

# fold_in tags of the per-image key (0 and 1 are explain_batch's MACO and crops).
_TAG_UNITS = 2
SEED_TAG = 3  # public: the runner names the "another seed" sanity variant


def _put(x, sharding):
    x = jnp.asarray(x)
    return x if sharding is None else jax.device_put(x, sharding)


@functools.partial(jax.jit, static_argnames=("classifier",))
def _t2c(classifier, variables, w, b, images):
    return text_to_concept(classifier, variables, Aligner(w, b), images)


@functools.partial(jax.jit, static_argnames=("classifier", "steps", "method", "ranked",
                                              "use_sae", "top_k"))
def _ig_units(classifier, variables, sae_params, images, class_idx, *, steps, method,
              ranked, use_sae, top_k):
    z = classifier.features(variables, images)
    sae = Sae(sae_params, top_k) if use_sae else None
    c = contributions(classifier, variables, z, class_idx, sae, steps=steps, method=method,
                      ranked=ranked)
    return c.ranked_ids, c.ranked_valid


@functools.partial(jax.jit, static_argnames=("classifier", "ranked", "use_sae", "top_k"))
def _random_units(classifier, variables, sae_params, images, keys, *, ranked, use_sae, top_k):
    z = classifier.features(variables, images)
    active = (sae_encode(sae_params, z, top_k)[1] != 0) if use_sae else jnp.ones(z.shape, bool)
    ids, valid = jax.vmap(lambda k, a: random_units(k, a[None], ranked))(keys, active)
    return ids[:, 0], valid[:, 0]


def texter_artifacts(classifier, variables, aligner: Aligner, images, keys,
                     config: ExplainConfig, *, sae: Sae | None, magnitude) -> dict[str, np.ndarray]:
    """TEXTER through ``explain_batch``; the per-image artefacts the runner caches.

    Returns:
      ``{"label" [B], "prob" [B], "crop_embeddings" [B, C, E], "unit_ids" [B, k'],
      "unit_scores" [B, k'], "n_units" [B], "retries" [B]}``.
    """
    ex = explain_batch(classifier, variables, aligner, None, images, keys, config,
                       sae=sae if config.use_sae else None, magnitude=magnitude)
    return {"label": ex.label, "prob": ex.prob, "crop_embeddings": ex.crop_embeddings,
            "unit_ids": ex.unit_ids, "unit_scores": ex.unit_scores, "n_units": ex.n_units,
            "retries": ex.retries}


def text2concept_artifacts(classifier, variables, aligner: Aligner, images
                           ) -> dict[str, np.ndarray]:
    """Text-to-Concept: the image's global features through the aligner (one "crop").

    Returns:
      ``{"label" [B], "prob" [B], "crop_embeddings" [B, 1, E]}``.
    """
    x, n = pad_to_multiple(np.asarray(images, np.float32), jax.local_device_count())
    pred, emb = _t2c(classifier, variables, jnp.asarray(aligner.w), jnp.asarray(aligner.b),
                     _put(x, batch_sharding(x.shape[0])))
    label = np.asarray(pred.label)
    prob = np.take_along_axis(np.asarray(pred.probs), label[:, None], axis=1)[:, 0]
    return {"label": label[:n], "prob": prob[:n], "crop_embeddings": np.asarray(emb)[:n]}


def texter_variant(classifier, model_vars, reader_vars, aligner: Aligner, images, keys,
                   config: ExplainConfig, *, class_idx, sae: Sae | None, magnitude,
                   units: str = "ig", seed_tag: int | None = None) -> np.ndarray:
    """TEXTER's concept-image embeddings under a sanity intervention.

    Args:
      classifier: the classifier.
      model_vars: variables whose units are selected and emphasised (stages 1-2);
        randomised for the model sanity checks.
      reader_vars: variables that embed the concept image in stage 3 (the real ones:
        the aligner was fitted to them, so the reading stays meaningful).
      aligner, images, keys, config, sae, magnitude: as ``explain_batch``.
      class_idx: int [B], the class to explain (the real model's prediction, so the
        randomised model explains the same decision).
      units: ``"ig"`` (integrated gradients, as TEXTER) or ``"random"`` (uniform over
        active SAE codes / all features, from ``fold_in(key, 2)``).
      seed_tag: when set, MACO and stage-3 keys derive from ``fold_in(key, seed_tag)``
        instead of the image key (the "another seed" reference).

    Returns:
      float32 [B, C, E], aligned crop embeddings as ``Explanation.crop_embeddings``.
    """
    if units not in ("ig", "random"):
        raise ValueError(f"units must be 'ig' or 'random', got {units!r}")
    images = np.asarray(images, np.float32)
    d = jax.local_device_count()
    x, n = pad_to_multiple(images, d)
    keys, _ = pad_to_multiple(np.asarray(jax.random.key_data(keys)), d)
    keys = jax.random.wrap_key_data(jnp.asarray(keys))
    cls, _ = pad_to_multiple(np.asarray(class_idx, np.int32), d)
    sharding = batch_sharding(x.shape[0])
    xs = _put(x, sharding)
    if seed_tag is not None:
        keys = jax.vmap(lambda k: jax.random.fold_in(k, seed_tag))(keys)
    use_sae = config.use_sae
    if use_sae and sae is None:
        raise ValueError("config.use_sae is True but no SAE was given")
    sae_params = sae.params if use_sae else None
    top_k = sae.top_k if use_sae else 0
    if units == "ig":
        ids, valid = _ig_units(classifier, model_vars, sae_params, xs, jnp.asarray(cls),
                               steps=config.ig_steps, method=config.ig_method,
                               ranked=config.ranked_units, use_sae=use_sae, top_k=top_k)
    else:
        unit_keys = jax.vmap(lambda k: jax.random.fold_in(k, _TAG_UNITS))(keys)
        ids, valid = _random_units(classifier, model_vars, sae_params, xs, unit_keys,
                                   ranked=config.ranked_units, use_sae=use_sae, top_k=top_k)
    ids, valid = np.array(ids), np.array(valid)
    # Rows with no valid unit (no active code) cannot be emphasised; give them unit 0.
    empty = ~valid.any(axis=1)
    valid[empty, 0] = True
    safe = np.where(valid, ids, 0)
    if use_sae:
        objective = sae_objective(classifier, model_vars, sae_encode, sae_params, top_k=top_k,
                                  compute_dtype=config.compute_dtype)
    else:
        objective = features_objective(classifier, model_vars,
                                       compute_dtype=config.compute_dtype)
    maco_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
    map_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    result, _ = maco_batch_with_retry(objective, maco_keys, magnitude, config.maco, safe,
                                      config.k_neu, valid, max_retries=config.max_retries)
    emb, _ = embed_concept_images_jit(classifier, reader_vars, jnp.asarray(aligner.w),
                                   jnp.asarray(aligner.b), map_keys,
                                   _put(result.image, sharding),
                                   _put(result.transparency, sharding),
                                   n_crops=config.map_crops)
    return np.asarray(emb)[:n]
