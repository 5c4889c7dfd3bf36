"""An Equinox classifier as a ``ClassifierLike``: :func:`from_equinox`.

An Equinox model is one pytree holding both arrays and static parts (activation
functions, pooling operations), so it cannot be passed whole as ``variables`` to the
jitted stages. :func:`from_equinox` splits it (``eqx.partition(model, eqx.is_array)``):
the arrays are the variables, the static part stays in the classifier, and each call
recombines them. It also does the rest of the usual glue: Equinox layers take one
example at a time, channels first, so the user's functions see one image [3, S, S]
(``channels_first=False``: [S, S, 3]) and the adapter vmaps them over the batch. The
model is explained in inference mode (``eqx.nn.inference_mode``: no dropout).

Equinox is imported inside the functions: the library itself does not need it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from texter_jax.adapters.common import traced_dims
from texter_jax.classifier import FunctionClassifier
from texter_jax.types import Array, Variables


def _resolve(model, fn, what: str) -> Callable:
    """A ``(model, x) -> y`` function from a callable or the name of a method/submodule."""
    if callable(fn):
        return fn
    if isinstance(fn, str) and callable(getattr(model, fn, None)):
        return _Attribute(fn)
    names = sorted(n for n in dir(model) if not n.startswith("_")
                   and callable(getattr(model, n, None)))
    raise ValueError(f"from_equinox: {what}={fn!r} is neither a function (model, x) -> y "
                     f"nor a method or layer of {type(model).__name__} (it has: "
                     f"{', '.join(names)})")


@dataclasses.dataclass(frozen=True)
class _Attribute:
    name: str

    def __call__(self, model, x):
        return getattr(model, self.name)(x)


@dataclasses.dataclass(frozen=True, eq=False)
class _Part:
    """``(arrays, x [B, ...]) -> [B, ...]``: ``fn(model, one example)``, vmapped."""

    static: Any
    fn: Callable
    to_input: Callable | None
    label: str

    def __call__(self, arrays: Variables, x: Array) -> Array:
        import equinox as eqx

        model = eqx.combine(arrays, self.static)
        if self.to_input is not None:
            x = self.to_input(x)
        y = jax.vmap(lambda one: self.fn(model, one))(x)
        return y.reshape(y.shape[0], -1)


def from_equinox(model, *, features: Callable | str, head: Callable | str, image_size: int,
                 channels_first: bool = True,
                 preprocess: Callable[[Array], Array] | None = None
                 ) -> tuple[FunctionClassifier, Variables]:
    """``(classifier, arrays)`` for an Equinox model.

    Args:
      model: an ``eqx.Module`` (explained in inference mode).
      features: ``(model, image) -> z`` for ONE image: float32 [3, S, S] in [0, 1]
        (channels first, Equinox's convention; [S, S, 3] with ``channels_first=False``),
        or the name of a method of the model. z may have any shape; it is flattened to D.
      head: ``(model, z [D]) -> logits [C]`` for one example, or the name of a method or
        layer of the model (e.g. ``"fc"`` for an ``eqx.nn.Linear``).
      image_size: S.
      channels_first: the layout ``features`` takes.
      preprocess: images float32 [B, S, S, 3] in [0, 1] -> images the model takes (same
        layout), e.g. a mean/std normalisation; None passes [0, 1] pixels.

    Returns:
      A :class:`~texter_jax.classifier.FunctionClassifier` and the model's arrays
      (``eqx.partition(model, eqx.is_array)[0]``), the stages' ``variables``.
    """
    import equinox as eqx

    if not isinstance(model, eqx.Module):
        raise ValueError(f"from_equinox: {type(model).__name__} is not an eqx.Module")
    model = eqx.nn.inference_mode(model, True)
    arrays, static = eqx.partition(model, eqx.is_array)
    feature_fn, head_fn = _resolve(model, features, "features"), _resolve(model, head, "head")
    prep = _Layout(preprocess, channels_first)
    name = type(model).__name__
    f = _Part(static, feature_fn, prep, f"{name} {getattr(features, '__name__', features)}")
    h = _Part(static, head_fn, None, f"{name} {getattr(head, '__name__', head)}")
    d, c = traced_dims(f, h, arrays, image_size, f"from_equinox({name})")
    clf = FunctionClassifier(f, h, image_size=image_size, feature_dim=d, num_classes=c,
                             family="equinox")
    return clf, arrays


@dataclasses.dataclass(frozen=True, eq=False)
class _Layout:
    """Images [B, S, S, 3] in [0, 1] -> the model's input: preprocess, then NCHW."""

    preprocess: Callable | None
    channels_first: bool

    def __call__(self, images: Array) -> Array:
        x = images if self.preprocess is None else self.preprocess(images)
        return jnp.transpose(x, (0, 3, 1, 2)) if self.channels_first else x
