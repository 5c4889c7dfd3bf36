"""The compiled programs :func:`~texter_jax.explain.explain_batch` runs, one set per
:class:`~texter_jax.batching.Placement` (``program = stage1_program(placement)``).

Every program takes the batch split over the placement's devices and the weights
whole on each, runs each device's share on its own (``shard_map``: no collective),
and leaves its outputs split: nothing is gathered between stages. Arrays are
positional, compile-time settings (the model, sizes) are keywords. The planner
(:mod:`texter_jax.plan`) lowers these same programs with abstract arguments for other
backends (a TPU topology), so what it measures is what ``explain`` runs. MACO's
program is :func:`texter_jax.emphasis.render.maco_batch_program`.

Shapes: B images (a multiple of the device count), D features, n SAE codes, R ranked
units, S canvas, C stage-3 views, E CLIP embedding size, T texts.
"""

from __future__ import annotations

from texter_jax import mapping
from texter_jax.batching import split_program
from texter_jax.stages import embed_concept_images, predict, select_units, text_to_concept


def _stage1(variables, sae, images, class_idx, unit_keys, *, classifier, steps, method,
            ranked, ranking, selector, unroll=False):
    pred = predict(classifier, variables, images)
    target = pred.label if class_idx is None else class_idx
    # Runs on one device's share of the batch, so IG's chunk is sized by that share.
    contrib = select_units(classifier, variables, pred.z, target, sae, unit_keys,
                           selector=selector, steps=steps, method=method, ranked=ranked,
                           ranking=ranking, unroll=unroll)
    return pred, contrib


# The Sae passes whole (a pytree: its k is in the treedef, so static) or None (no SAE).
stage1_program = split_program(
    _stage1, (False, False, True, True, True), static_argnames=(
        "classifier", "steps", "method", "ranked", "ranking", "selector", "unroll"))
stage1_program.__doc__ = """Prediction and stage 1: ``program(variables, sae: Sae | None,
images [B, H, W, 3], class_idx [B] | None, unit_keys [B], *, classifier, steps, method,
ranked, ranking, selector, unroll=False) -> (Prediction, Contributions)``.
``unroll`` writes IG's loop out, for the planner's cost figures (:mod:`texter_jax.plan`)."""


def _stage3(variables, aligner, keys, images, transparency, *, classifier, n_crops, whole,
            unroll=False):
    return embed_concept_images(classifier, variables, aligner, keys, images,
                                transparency, n_crops=n_crops, whole=whole, unroll=unroll)


stage3_program = split_program(_stage3, (False, False, True, True, True),
                               static_argnames=("classifier", "n_crops", "whole", "unroll"))
stage3_program.__doc__ = """Stage 3's image side: ``program(variables, aligner: Aligner
(w [E, D], b [E]), keys [B], images [B, S, S, 3], transparency [B, S, S, 3], *,
classifier, n_crops, whole, unroll=False) -> (embeddings [B, C, E], logits [B, C, K])``.
Pass :meth:`Aligner.bare`: metrics in the treedef would recompile per aligner."""

retrieve_program = split_program(mapping.retrieve, (True, False))
retrieve_program.__doc__ = """``program(crop_embeddings [B, C, E], text_emb [T, E]) ->
scores [B, T]``."""


def _baseline(variables, aligner, images, *, classifier):
    return text_to_concept(classifier, variables, aligner, images)


baseline_program = split_program(_baseline, (False, False, True),
                                 static_argnames=("classifier",))
baseline_program.__doc__ = """Text-to-Concept's image side: ``program(variables, aligner,
images, *, classifier) -> (Prediction, embeddings [B, 1, E])``."""
