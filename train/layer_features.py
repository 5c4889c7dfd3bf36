"""Activations of any named layer of any JAX model, as feature shards an SAE trains on.

A :class:`texter_jax.capture.Capture` (Linen, NNX or a plain function) names the layer;
:func:`layer_features` turns it into the ``features_fn(variables, images) -> [B, D]``
that :func:`texter_jax.train.features.extract_features` streams over an image folder into
memory-mapped shards, and :func:`texter_jax.train.sae_train.train_sae` reads those shards
a batch at a time, so neither the activations nor the images are ever all in memory.

A layer's activation ``[B, ..., C]`` becomes one row per image: ``"mean"`` averages the
axes between batch and channels (a conv map's positions, a ViT's tokens), ``"first"``
takes position 0 of axis 1 (a ViT's class token), ``"flatten"`` keeps every value.
:func:`check_layer` traces the model once (``jax.eval_shape``, no FLOPs): a name that is
not a layer raises :class:`~texter_jax.capture.LayerNotFound` listing the layers there
are, before any image is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from texter_jax.capture import Capture, capture_linen
from texter_jax.types import Array, Variables

REDUCTIONS = ("mean", "first", "flatten")


def reduce_activation(act: Array, reduce: str) -> Array:
    """One row per image: float [B, ..., C] -> float32 [B, D].

    >>> import jax.numpy as jnp
    >>> a = jnp.arange(12.0).reshape(1, 2, 2, 3)   # [B, H, W, C]
    >>> reduce_activation(a, "mean").tolist()
    [[4.5, 5.5, 6.5]]
    >>> reduce_activation(a, "first").shape, reduce_activation(a, "flatten").shape
    ((1, 6), (1, 12))
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    act = jnp.asarray(act, jnp.float32)
    if act.ndim < 2:
        raise ValueError(f"a layer activation must be [B, ..., C], got shape {act.shape}")
    if act.ndim == 2 or reduce == "flatten":
        return act.reshape(act.shape[0], -1)
    if reduce == "first":
        return act[:, 0].reshape(act.shape[0], -1)
    return act.mean(axis=tuple(range(1, act.ndim - 1)))


def layer_features(capture: Capture, *, reduce: str = "mean",
                   prepare: Callable[[Array], Array] | None = None
                   ) -> Callable[[Variables, Array], Array]:
    """``features_fn(variables, images [B, S, S, 3] in [0, 1]) -> float32 [B, D]`` of the
    capture's one layer.

    Args:
      capture: a capture of exactly one layer.
      reduce: one of :data:`REDUCTIONS` (see the module docstring).
      prepare: maps the [0, 1] images to what the model takes (e.g. a classifier's
        normalisation); identity when None.
    """
    if len(capture.names) != 1:
        raise ValueError(f"layer_features reads one layer, got {list(capture.names)}")
    reduce_activation(jnp.zeros((1, 1)), reduce)  # a wrong reduce fails here, not in jit
    (name,) = capture.names

    def features(variables: Variables, images: Array) -> Array:
        x = images if prepare is None else prepare(images)
        return reduce_activation(capture(variables, x)[name], reduce)

    return features


def check_layer(features_fn: Callable[[Variables, Array], Array], variables: Variables,
                image_size: int) -> int:
    """D, the width of ``features_fn``'s rows, found by tracing one image (no FLOPs).

    Raises:
      LayerNotFound: the capture's layer is not one of the model's (the message lists
        them).
    """
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    out = jax.eval_shape(features_fn, variables, images)
    return int(out.shape[-1])


def classifier_layer(classifier: Any, layer: str, *, reduce: str = "mean"
                     ) -> Callable[[Variables, Array], Array]:
    """``features_fn`` of a named layer of a converted Linen classifier
    (:class:`texter_jax.classifier.Classifier`): its input normalisation, then the full
    forward with ``layer``'s output captured (a submodule path, ``"/"``-joined)."""
    capture = capture_linen(classifier.module, [layer])
    return layer_features(capture, reduce=reduce, prepare=classifier.normalize)
