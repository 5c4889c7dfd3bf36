"""Objectives for MACO: how strongly a set of units fires on a batch of crops.

TEXTER's stage-2 objective (``src/explanations/texter/texter.py:get_objective_model``)
is, for selected units ``U``, ``sum_{u in U} mean_over_crops(act[:, u])``, where
``act`` is the classifier's penultimate features (``use_sae=False``) or the TopK SAE
codes of those features (``use_sae=True``, the release default). It is a score to
*maximise*; the MACO loop minimises its negative.

Objectives are ``jax.tree_util.Partial`` pytrees: model weights are leaves (traced
arguments of the compiled loop, not constants baked into it) and the callable is a
small frozen dataclass compared by value, so building the same objective twice hits
the same compiled program. Weights are read, never differentiated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from texter_jax.sae import sae_encode
from texter_jax.types import Array, ClassifierLike, Variables


def unit_score(acts: Array, unit_ids: Array, unit_mask: Array | None = None) -> Array:
    """Sum over selected units of their mean activation over the batch.

    Args:
      acts: float [n, D] activations of n crops.
      unit_ids: int [k] unit indices (padding entries may hold any valid index).
      unit_mask: bool [k]; False entries are ignored. None keeps all k.

    Returns:
      float32 scalar.
    """
    per_unit = jnp.mean(jnp.take(acts.astype(jnp.float32), unit_ids, axis=1), axis=0)
    if unit_mask is not None:
        per_unit = jnp.where(unit_mask, per_unit, 0.0)
    return jnp.sum(per_unit)


def cast_floats(tree, dtype):
    """Every floating leaf of ``tree`` cast to ``dtype``; other leaves (ints, keys) kept."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


@dataclasses.dataclass(frozen=True)
class _UnitActivations:
    """Static part of a unit objective (hashable, compared by value)."""

    classifier: ClassifierLike
    compute_dtype: str | None = None
    sae_encode_fn: Callable | None = None
    top_k: int | None = None
    logits: bool = False  # score the head's logits (units are classes) instead

    def __call__(self, variables: Variables, sae_params: Any, crops: Array,
                 unit_ids: Array, unit_mask: Array | None) -> Array:
        if self.compute_dtype is not None:
            # Forward/backward of the classifier in low precision; the caller's image
            # and weights stay float32 and the result returns to float32.
            dtype = jnp.dtype(self.compute_dtype)
            variables = cast_floats(variables, dtype)
            crops = crops.astype(dtype)
        z = self.classifier.features(variables, crops)
        if self.logits:
            z = self.classifier.head(variables, z)
        z = z.astype(jnp.float32)
        if self.sae_encode_fn is not None:
            # The SAE stays in float32: TopK selection is sensitive to rounding ties.
            _, z = self.sae_encode_fn(sae_params, z, self.top_k)
        return unit_score(z, unit_ids, unit_mask)


def features_objective(classifier: ClassifierLike, variables: Variables, *,
                       compute_dtype=None) -> Partial:
    """Objective over penultimate features: ``f(crops, unit_ids, unit_mask) -> score``.

    Args:
      classifier: the normalize / features / head wrapper.
      variables: its Linen variables (float32).
      compute_dtype: e.g. ``jnp.bfloat16`` to run the classifier's forward and backward
        in that dtype (weights and crops are cast inside; activations are cast back
        to float32 before the score). None keeps float32.

    Returns:
      A pytree callable ``(crops [n, H, W, 3] in ~[0, 1], unit_ids [k] int,
      unit_mask [k] bool | None) -> float32 scalar``; bind units with
      :func:`with_units` for :func:`~texter_jax.emphasis.render.maco`.
    """
    static = _UnitActivations(classifier, _dtype_name(compute_dtype))
    return Partial(static, variables, None)


def logits_objective(classifier: ClassifierLike, variables: Variables, *,
                     compute_dtype=None) -> Partial:
    """Objective over the classifier's logits: units are classes.

    With ``unit_ids = [c]`` MACO maximises the class logit itself, the classic class
    visualisation; TEXTER's ablation of its unit selection (``ExplainConfig(objective=
    "class_logit")``). Same callable contract as :func:`features_objective`.
    """
    static = _UnitActivations(classifier, _dtype_name(compute_dtype), logits=True)
    return Partial(static, variables, None)


def sae_objective(classifier: ClassifierLike, variables: Variables,
                  sae_encode_fn: Callable | None, sae_params: Any, *, top_k: int,
                  compute_dtype=None) -> Partial:
    """Objective over TopK SAE codes of the penultimate features.

    Args:
      classifier, variables, compute_dtype: as in :func:`features_objective`.
      sae_encode_fn: ``(params, x [n, D], top_k) -> (pre_codes, codes [n, N])``;
        None uses :func:`texter_jax.sae.sae_encode`. Must be a stable (module-level)
        function so repeated calls reuse the compiled loop.
      sae_params: the SAE parameters (float32).
      top_k: k of the TopK SAE.

    Returns:
      The same callable contract as :func:`features_objective`, scoring codes.
    """
    if sae_encode_fn is None:
        sae_encode_fn = sae_encode
    static = _UnitActivations(classifier, _dtype_name(compute_dtype), sae_encode_fn,
                              int(top_k))
    return Partial(static, variables, sae_params)


def _call_with_units(objective, unit_ids, unit_mask, crops):
    return objective(crops, unit_ids, unit_mask)


def with_units(objective: Callable, unit_ids, unit_mask=None) -> Partial:
    """Binds a unit set: ``objective(crops, ids, mask)`` -> ``g(crops) -> score``.

    Args:
      objective: a unit objective (e.g. from :func:`features_objective`).
      unit_ids: int [k].
      unit_mask: bool [k] or None.
    """
    if not isinstance(objective, Partial):
        objective = Partial(objective)
    unit_ids = jnp.asarray(unit_ids, jnp.int32)
    if unit_mask is not None:
        unit_mask = jnp.asarray(unit_mask, bool)
    return Partial(_call_with_units, objective, unit_ids, unit_mask)


def _dtype_name(dtype) -> str | None:
    return None if dtype is None else jnp.dtype(dtype).name
