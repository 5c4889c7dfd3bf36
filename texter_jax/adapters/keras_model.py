"""A Keras 3 classifier on the JAX backend as a ``ClassifierLike``: :func:`from_keras`.

The model runs through ``stateless_call`` (weights in, outputs out, nothing assigned),
so it is a pure function of a variables pytree and can be jitted, vmapped and split
over devices like any other. Two sub-models share the model's weights: the input up to
``features_layer`` (features, flattened to [B, D]: a pooling layer with
``keepdims=True`` gives [B, 1, 1, D]) and ``features_layer`` up to the output (the
head). Always called with ``training=False``: BatchNorm's moving statistics, no dropout.

Keras is imported here, inside the functions, with ``KERAS_BACKEND=jax`` set when unset:
the library itself does not need Keras. The dtype policy is the model's: with
``compute_dtype="bfloat16"`` a float32-policy model casts its inputs back to float32
(TEXTER warns); build it under ``keras.config.set_dtype_policy("mixed_bfloat16")`` for a
bfloat16 forward.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from texter_jax.capture import Capture, LayerNotFound
from texter_jax.classifier import FunctionClassifier
from texter_jax.types import Array, Variables


def import_keras():
    """Keras on the JAX backend (sets ``KERAS_BACKEND=jax`` when unset)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"from_keras needs Keras's JAX backend, not "
                           f"{keras.backend.backend()!r}: set KERAS_BACKEND=jax before "
                           "importing keras")
    return keras


@dataclasses.dataclass(frozen=True, eq=False)
class _Stateless:
    """A Keras (sub-)model as ``(variables, x) -> outputs`` over the whole model's
    variables: ``index`` picks the sub-model's trainable and non-trainable ones."""

    model: Any
    index: tuple[tuple[int, ...], tuple[int, ...]]

    def __call__(self, variables: Variables, x):
        trainable = [variables["trainable"][i] for i in self.index[0]]
        fixed = [variables["non_trainable"][i] for i in self.index[1]]
        return self.model.stateless_call(trainable, fixed, x, training=False)[0]


def _stateless(whole, part) -> _Stateless:
    where = {id(v): ("t", i) for i, v in enumerate(whole.trainable_variables)}
    where.update({id(v): ("n", i) for i, v in enumerate(whole.non_trainable_variables)})
    t = tuple(where[id(v)][1] for v in part.trainable_variables)
    n = tuple(where[id(v)][1] for v in part.non_trainable_variables)
    return _Stateless(part, (t, n))


def keras_variables(model) -> dict[str, list]:
    """The model's weights as the pytree ``{"trainable": [...], "non_trainable": [...]}``
    (jax arrays, in the model's own order), the ``variables`` of :func:`from_keras`."""
    return {"trainable": [v.value for v in model.trainable_variables],
            "non_trainable": [v.value for v in model.non_trainable_variables]}


def _layer(model, name: str):
    names = [layer.name for layer in model.layers]
    if name not in names:
        raise LayerNotFound(f"from_keras: {model.name} has no layer {name!r}; its layers: "
                            f"{', '.join(names)}")
    return model.get_layer(name)


@dataclasses.dataclass(frozen=True, eq=False)
class _KerasRun:
    """``run`` of a Keras :class:`~texter_jax.capture.Capture`: one multi-output model."""

    call: _Stateless
    names: tuple[str, ...]
    all_names: tuple[str, ...]

    def __call__(self, variables, x, names):
        out = self.call(variables, x)
        return out[0], dict(zip(self.names, out[1:], strict=True))

    def layer_names(self) -> list[str]:
        return list(self.all_names)


def capture_keras(model, names) -> Capture:
    """A :class:`~texter_jax.capture.Capture` of a functional or Sequential Keras model's
    layer outputs (by layer name), on the variables of :func:`keras_variables`."""
    keras = import_keras()
    outs = [_layer(model, n).output for n in names]
    both = keras.Model(model.inputs, [model.outputs[0], *outs])
    return Capture(_KerasRun(_stateless(model, both), tuple(names),
                             tuple(layer.name for layer in model.layers)),
                   tuple(names), model.name)


@dataclasses.dataclass(frozen=True, eq=False)
class _Features:
    call: _Stateless
    preprocess: Callable | None
    channels_first: bool
    label: str

    def __call__(self, variables: Variables, images: Array) -> Array:
        x = images if self.preprocess is None else self.preprocess(images)
        if self.channels_first:
            x = jnp.transpose(x, (0, 3, 1, 2))
        z = self.call(variables, x)
        return z.reshape(z.shape[0], -1)


@dataclasses.dataclass(frozen=True, eq=False)
class _Head:
    call: _Stateless
    z_shape: tuple[int, ...]

    def __call__(self, variables: Variables, z: Array) -> Array:
        return self.call(variables, z.reshape((z.shape[0],) + self.z_shape))


def from_keras(model, *, features_layer: str, image_size: int | None = None,
               preprocess: Callable[[Array], Array] | None = None
               ) -> tuple[FunctionClassifier, dict[str, list]]:
    """``(classifier, variables)`` for a functional or Sequential Keras model.

    Args:
      model: a built Keras model whose output is logits [B, C] (for
        ``keras.applications``: ``classifier_activation=None``).
      features_layer: the name of the layer whose output is the features (its output,
        flattened, is z [B, D]; the rest of the model is the head).
      image_size: S; None reads it from the model's input shape.
      preprocess: images float32 [B, S, S, 3] in [0, 1] -> what the model takes (e.g.
        ``lambda x: x * 255`` for a model with its own ``Rescaling`` layer); None passes
        [0, 1] pixels. A channels-first model gets them transposed to NCHW after it.

    Returns:
      A :class:`~texter_jax.classifier.FunctionClassifier` and
      :func:`keras_variables` of the model.

    Raises:
      texter_jax.capture.LayerNotFound: no layer ``features_layer`` (the message lists
        them); ValueError: not a functional model, a softmax output, or no static input
        size.
    """
    keras = import_keras()
    if not getattr(model, "inputs", None) or not hasattr(model, "get_layer"):
        raise ValueError(f"from_keras: {type(model).__name__} has no layer graph (a "
                         "subclassed model): use tj.FunctionClassifier with "
                         "model.stateless_call, or build it functional")
    activation = getattr(model.layers[-1], "activation", None)
    if getattr(activation, "__name__", "") == "softmax":
        raise ValueError(f"from_keras: {model.name} ends in a softmax ({model.layers[-1].name})"
                         "; TEXTER needs logits: build it with classifier_activation=None")
    feat = _layer(model, features_layer).output
    shape = tuple(model.inputs[0].shape[1:])
    channels_first = len(shape) == 3 and shape[0] == 3 and shape[-1] != 3
    side = shape[1] if channels_first else shape[0]
    if image_size is None:
        if side is None:
            raise ValueError(f"from_keras: {model.name} takes any input size {shape}: "
                             "pass image_size=")
        image_size = int(side)
    if any(n is None for n in feat.shape[1:]):
        raise ValueError(f"from_keras: {features_layer!r} gives {tuple(feat.shape)}, of no "
                         "fixed size: name a pooled or flattened layer")
    head = keras.Model(feat, model.outputs[0])
    clf = FunctionClassifier(
        _Features(_stateless(model, keras.Model(model.inputs, feat)), preprocess,
                  channels_first, f"{model.name} up to {features_layer!r}"),
        _Head(_stateless(model, head), tuple(feat.shape[1:])),
        image_size=image_size, feature_dim=math.prod(feat.shape[1:]),
        num_classes=math.prod(model.outputs[0].shape[1:]), family="keras")
    return clf, keras_variables(model)
