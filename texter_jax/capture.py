"""Named intermediate activations of a model: one mechanism for three kinds of model.

A :class:`Capture` is ``capture(variables, x) -> {name: activation}`` for the layers it
was asked for, pure and traceable (jit, vmap, grad, shard_map), built by:

* :func:`capture_linen`: a Linen module, compact or ``setup``-style, through Flax's
  ``capture_intermediates`` (a layer is a submodule path such as ``"block4_1"`` or
  ``"encoder/layer_3"``; its ``__call__`` output is captured), or what a layer receives
  (``inputs=True``, through ``nn.intercept_methods``);
* :func:`capture_nnx`: a Flax NNX model (``nnx.split``'s graph and state), through
  ``nnx.capture`` on a fresh ``nnx.merge`` each call, so the user's model is untouched
  (a layer is a submodule path such as ``"blocks/1"``);
* :func:`capture_function`: a plain function that returns ``(output, acts)`` with
  ``acts`` a (nested) dict of named activations, the big_vision convention.

A layer called more than once gives its last call. A name that is not a layer raises
:class:`LayerNotFound` listing the layers there are. The adapters
(:mod:`texter_jax.adapters`) read a classifier's features through it; SAE training can
read any layer the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
from flax import linen as nn
from flax import nnx

from texter_jax.types import Array, Variables


class LayerNotFound(ValueError):
    """A layer name that the model does not have; the message lists those it has."""


@dataclasses.dataclass(frozen=True, eq=False)
class Capture:
    """``capture(variables, x) -> {name: activation}`` for ``names``.

    Attributes:
      run: ``(variables, x, names) -> (output, {layer: activation})``; with ``names``
        None it returns every layer (or it has ``layer_names() -> list[str]``).
      names: the layers captured.
      model: what messages call the model.
    """

    run: Callable[[Variables, Array, tuple[str, ...] | None], tuple[Any, dict]]
    names: tuple[str, ...]
    model: str

    def __call__(self, variables: Variables, x: Array) -> dict[str, Array]:
        return self.with_output(variables, x)[1]

    def with_output(self, variables: Variables, x: Array) -> tuple[Any, dict[str, Array]]:
        """The model's own output and the captured activations, in one pass."""
        out, acts = self.run(variables, x, self.names)
        missing = [n for n in self.names if n not in acts]
        if missing:
            raise LayerNotFound(f"capture: {self.model} has no layer {missing[0]!r}; its "
                                f"layers: {', '.join(self.layers(variables, x))}")
        return out, {n: acts[n] for n in self.names}

    def layers(self, variables: Variables, x: Array) -> list[str]:
        """Every layer name the model has on input ``x`` (traced with eval_shape, unless
        the model lists its layers itself: ``run.layer_names()``)."""
        if hasattr(self.run, "layer_names"):
            return list(self.run.layer_names())
        names = []
        jax.eval_shape(lambda v, x: names.extend(self.run(v, x, None)[1]) or 0,
                       variables, x)
        return names


def _path_name(path) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)


def _calls(tree, prefix=()) -> dict[str, Array]:
    """{"a/b": last __call__ output} from Linen's nested intermediates dict."""
    out = {}
    for key, value in tree.items():
        if key == "__call__":
            if prefix:
                out["/".join(prefix)] = value[-1]
        elif isinstance(value, dict) or hasattr(value, "items"):
            out.update(_calls(value, prefix + (str(key),)))
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class _LinenRun:
    module: nn.Module
    method: str
    kwargs: tuple
    inputs: bool

    def __call__(self, variables, x, names):
        wanted = None if names is None else set(names)
        kwargs = dict(self.kwargs)
        if not self.inputs:
            def keep(mdl, method_name):
                return method_name == "__call__" and (
                    wanted is None or "/".join(mdl.path) in wanted)

            out, state = self.module.apply(variables, x, method=self.method,
                                           capture_intermediates=keep,
                                           mutable=["intermediates"], **kwargs)
            return out, _calls(state.get("intermediates", {}))
        seen = {}

        def record(next_fun, args, call_kwargs, context):
            path = "/".join(context.module.path)
            if context.method_name == "__call__" and path and args and (
                    wanted is None or path in wanted):
                seen[path] = args[0]  # the last call wins, as for outputs
            return next_fun(*args, **call_kwargs)

        with nn.intercept_methods(record):
            out = self.module.apply(variables, x, method=self.method, **kwargs)
        return out, seen


def capture_linen(module: nn.Module, names, *, method: str = "__call__",
                  apply_kwargs: dict | None = None, inputs: bool = False) -> Capture:
    """Capture of a Linen module's layers (submodule paths, ``"/"``-joined).

    Args:
      module: the Linen module (compact or ``setup``).
      names: the layer paths to capture, e.g. ``["block4_1"]``.
      method: the module method that runs the model.
      apply_kwargs: extra keyword arguments of ``module.apply`` (e.g. ``{"train":
        False}`` for a module whose BatchNorm follows a ``train`` flag).
      inputs: capture what each layer receives (its ``__call__``'s first argument,
        through ``nn.intercept_methods``) instead of what it returns (through
        ``capture_intermediates``); the input of a classifier's last Dense is its
        penultimate features.

    Returns:
      A :class:`Capture` taking the module's variables and its input.
    """
    run = _LinenRun(module, method, tuple(sorted((apply_kwargs or {}).items())), inputs)
    return Capture(run, tuple(names), type(module).__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class _NnxRun:
    graphdef: Any
    method: str

    def __call__(self, state, x, names):
        model = nnx.merge(self.graphdef, state)  # a fresh copy: the caller's stays as is
        call = nnx.capture(lambda m, x: getattr(m, self.method)(x), nnx.Intermediate,
                           method_outputs=nnx.Intermediate)
        out, inter = call(model, x)
        acts = {}
        for path, var in nnx.to_flat_state(inter):
            if len(path) > 1 and path[-1] == "__call__":
                acts[_path_name(path[:-1])] = var.get_value()[-1]
        wanted = acts if names is None else {n: acts[n] for n in names if n in acts}
        return out, wanted


def capture_nnx(graphdef, names, *, method: str = "__call__", model: str = "NNX model"
                ) -> Capture:
    """Capture of an NNX model's layers; the capture takes the ``nnx.split`` state.

    Args:
      graphdef: the graph from ``graphdef, state = nnx.split(model)``.
      names: submodule paths, ``"/"``-joined (``"blocks/1"``).
      method: the model method that runs it.
      model: what messages call the model.
    """
    return Capture(_NnxRun(graphdef, method), tuple(names), model)


def _flat(acts, prefix=()) -> dict[str, Array]:
    out = {}
    for key, value in acts.items():
        if isinstance(value, dict):
            out.update(_flat(value, prefix + (str(key),)))
        else:
            out["/".join(prefix + (str(key),))] = value
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class _FunctionRun:
    fn: Callable

    def __call__(self, variables, x, names):
        out, acts = self.fn(variables, x)
        return out, _flat(acts)


def capture_function(fn: Callable[[Variables, Array], tuple[Any, dict]], names, *,
                     model: str | None = None) -> Capture:
    """Capture of a plain function ``fn(variables, x) -> (output, acts)`` whose ``acts``
    is a dict (nested dicts are ``"/"``-joined) of named activations."""
    return Capture(_FunctionRun(fn), tuple(names),
                   model or getattr(fn, "__qualname__", type(fn).__name__))
