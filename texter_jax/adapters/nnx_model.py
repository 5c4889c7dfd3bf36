"""A Flax NNX model as a ``ClassifierLike``: :func:`nnx_classifier`, in eval mode.

``nnx.split`` separates the model into a static graph and a state pytree; every stage
calls ``nnx.merge(graph, state).features(x)`` inside its jitted code, so the state is
what the stages take as ``variables``.

The graph is taken from an eval-mode copy (``deterministic=True``,
``use_running_average=True`` on every submodule that has them), so BatchNorm reads its
running statistics and Dropout is off, whatever mode the caller's model is in; the
caller's model is not changed. A train-mode BatchNorm would instead normalise with
batch statistics in stage 1 and try to write them from inside MACO's gradient.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from flax import nnx

from texter_jax.adapters.common import traced_dims
from texter_jax.classifier import FunctionClassifier


@dataclasses.dataclass(frozen=True)
class _NnxMethod:
    """``(state, x) -> nnx.merge(graphdef, state).<method>(x)``, hashable by graphdef."""

    graphdef: Any
    method: str

    def __call__(self, state, x):
        return getattr(nnx.merge(self.graphdef, state), self.method)(x)

    @property
    def label(self) -> str:
        return f"nnx {self.method}"


def eval_copy(model):
    """``(graphdef, state)`` of an eval-mode copy of ``model``; ``model`` is untouched."""
    graphdef, state = nnx.split(model)
    copy = nnx.merge(graphdef, state)  # shares arrays, not the mode attributes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # eval() is kept in 0.12
        copy.eval()
    return nnx.split(copy)


def nnx_classifier(model, *, image_size: int, feature_dim: int | None = None,
                   num_classes: int | None = None, features: str = "features",
                   head: str = "head") -> tuple[FunctionClassifier, Any]:
    """``(classifier, state)`` for a Flax NNX model with ``features`` / ``head`` methods.

    Args:
      model: an ``nnx.Module``; ``model.<features>(x)`` takes images float32
        [B, S, S, 3] in [0, 1] (NHWC; it normalises them itself) and returns [B, D];
        ``model.<head>(z)`` returns logits [B, C]. Explained in eval mode (see the module
        docstring); the model itself is left in the mode it is in.
      image_size: S.
      feature_dim, num_classes: D and C; None reads them from one traced image.
      features, head: the method names.

    Returns:
      A :class:`~texter_jax.classifier.FunctionClassifier` and the state pytree the
      stages take as ``variables``.
    """
    for name in (features, head):
        if not callable(getattr(model, name, None)):
            raise ValueError(f"nnx_classifier: {type(model).__name__} has no method "
                             f"{name!r}; pass features=/head= with its method names")
    graphdef, state = eval_copy(model)
    features_fn, head_fn = _NnxMethod(graphdef, features), _NnxMethod(graphdef, head)
    if feature_dim is None or num_classes is None:
        d, c = traced_dims(features_fn, head_fn, state, image_size, "nnx_classifier")
        feature_dim = d if feature_dim is None else feature_dim
        num_classes = c if num_classes is None else num_classes
    clf = FunctionClassifier(features_fn, head_fn, image_size=image_size,
                             feature_dim=feature_dim, num_classes=num_classes, family="nnx")
    return clf, state

