"""A Flax Linen classifier, compact or not, as a ``ClassifierLike``: :func:`from_linen`.

:class:`~texter_jax.classifier.Classifier` needs ``features`` / ``head`` methods, which
a compact module (every layer built inside ``__call__``) does not have. Here the user
names the head layer instead (the last Dense, e.g. Flax's generated ``"Dense_0"``):

* ``features(variables, x)``: the whole model runs and the head layer's *input* is
  captured (:func:`~texter_jax.capture.capture_linen` with ``inputs=True``), flattened
  to [B, D]; that is the penultimate representation whatever pooling leads to it;
* ``head(variables, z)``: the head layer alone, a copy of the bound submodule applied
  to its own variables, so ``head(features(x))`` is the model's output.

Both are checked once, on one image, when the adapter is built: a wrong layer name
lists the layers there are, and a model whose output is not the head layer's output
(a softmax after it, say) is refused.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from texter_jax.capture import Capture, capture_linen
from texter_jax.classifier import FunctionClassifier
from texter_jax.types import Array, Variables

# Keyword arguments of a model's __call__ that select eval mode, and their eval value.
EVAL_KWARGS = {"train": False, "training": False, "deterministic": True}


@dataclasses.dataclass(frozen=True, eq=False)
class _Features:
    capture: Capture
    layer: str
    preprocess: Callable | None

    def __call__(self, variables: Variables, images: Array) -> Array:
        x = images if self.preprocess is None else self.preprocess(images)
        z = self.capture(variables, x)[self.layer]
        return z.reshape(z.shape[0], -1)

    @property
    def label(self) -> str:
        return f"{self.capture.model} input of {self.layer!r}"


@dataclasses.dataclass(frozen=True, eq=False)
class _Head:
    module: nn.Module  # the head submodule, unbound
    path: tuple[str, ...]
    z_shape: tuple[int, ...]  # what the layer receives, per image

    def __call__(self, variables: Variables, z: Array) -> Array:
        own = {}
        for collection, tree in variables.items():
            for part in self.path:
                tree = tree.get(part) if hasattr(tree, "get") else None
            if tree is not None:
                own[collection] = tree
        out = self.module.apply(own, z.reshape((z.shape[0],) + self.z_shape))
        return out.reshape(out.shape[0], -1)


def eval_kwargs(module: nn.Module, method: str, apply_kwargs: dict | None) -> dict:
    """``apply_kwargs`` plus the eval-mode value of each mode flag the method takes
    (:data:`EVAL_KWARGS`) that it does not set; a flag set to train mode is refused."""
    out = dict(apply_kwargs or {})
    params = inspect.signature(getattr(module, method)).parameters
    for flag, value in EVAL_KWARGS.items():
        if flag in out and out[flag] != value:
            raise ValueError(f"from_linen: apply_kwargs {flag}={out[flag]!r} is train mode; "
                             f"TEXTER explains in eval mode ({flag}={value!r}): drop it")
        if flag in params and flag not in out:
            out[flag] = value
    return out


def _head_module(module, variables, x, method, kwargs, layer):
    """The bound head submodule, cloned unbound, and what it receives [1, ...]."""
    found = {}

    def grab(next_fun, args, call_kwargs, context):
        if context.method_name == "__call__" and "/".join(context.module.path) == layer:
            found["module"] = context.module.clone(parent=None)
        return next_fun(*args, **call_kwargs)

    def run(v, x):
        with nn.intercept_methods(grab):
            return module.apply(v, x, method=method, **kwargs)

    jax.eval_shape(run, variables, x)
    return found["module"]


def from_linen(module: nn.Module, variables: Variables, *, head_layer: str,
               image_size: int, preprocess: Callable[[Array], Array] | None = None,
               method: str = "__call__", apply_kwargs: dict | None = None
               ) -> tuple[FunctionClassifier, Variables]:
    """``(classifier, variables)`` for a Linen classifier whose last layer is ``head_layer``.

    Args:
      module: the Linen module; ``module.apply(variables, x)`` gives logits [B, C].
      variables: its variables (``{"params": ..., "batch_stats": ...}``).
      head_layer: the path of the layer that makes the logits, ``"/"``-joined (a compact
        module's ``nn.Dense(C)`` is ``"Dense_0"`` unless named); its input, flattened,
        is the features z [B, D].
      image_size: S, the side of the square NHWC input.
      preprocess: images float32 [B, S, S, 3] in [0, 1] -> what the module takes
        (mean/std normalisation, say); None passes [0, 1] pixels.
      method: the module method that runs the model.
      apply_kwargs: other keyword arguments of ``apply``. A ``train`` / ``training``
        flag the method takes is set False and ``deterministic`` True (eval mode:
        BatchNorm's running statistics, no dropout); setting one to train mode is
        refused.

    Returns:
      A :class:`~texter_jax.classifier.FunctionClassifier` and ``variables``.

    Raises:
      texter_jax.capture.LayerNotFound: ``head_layer`` is not a layer (the message lists
        them); ValueError: the model's output is not the head layer's.
    """
    kwargs = eval_kwargs(module, method, apply_kwargs)
    capture = capture_linen(module, [head_layer], method=method, apply_kwargs=kwargs,
                            inputs=True)
    features = _Features(capture, head_layer, preprocess)
    x = jnp.full((1, image_size, image_size, 3), 0.5, jnp.float32)
    pre = x if preprocess is None else preprocess(x)
    out, acts = jax.eval_shape(capture.with_output, variables, pre)
    received = acts[head_layer]
    head = _Head(_head_module(module, variables, pre, method, kwargs, head_layer),
                 tuple(head_layer.split("/")), tuple(received.shape[1:]))
    d, c = math.prod(received.shape[1:]), math.prod(out.shape[1:])
    clf = FunctionClassifier(features, head, image_size=image_size, feature_dim=d,
                             num_classes=c, family="linen")
    _check_head_is_output(module, variables, pre, x, clf, method, kwargs, head_layer)
    return clf, variables


def _check_head_is_output(module, variables, pre, x, clf, method, kwargs, layer) -> None:
    """One concrete image: ``head(features(x))`` must be the model's own output."""
    both = jax.jit(lambda v, pre, x: (module.apply(v, pre, method=method, **kwargs),
                                      clf.logits(v, x)))  # one compile, not op by op
    own, ours = both(variables, pre, x)
    own, ours = np.asarray(own).reshape(1, -1), np.asarray(ours)
    if own.shape != ours.shape or not np.allclose(own, ours, rtol=1e-4, atol=1e-5):
        raise ValueError(f"from_linen: the output of {type(module).__name__} is not what "
                         f"{layer!r} returns (an operation after it, a softmax?): name the "
                         "last layer as head_layer and return its logits")

