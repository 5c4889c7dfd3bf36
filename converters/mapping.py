"""Explicit torch-key -> Flax-path tables, applied with full validation.

A converter builds a list of :class:`Rule` (torch key, Flax path, transform) and calls
:func:`apply_rules`, which checks the result against the model's abstract variables and
raises :class:`ConversionError` listing *all* missing keys, unexpected keys and shape
mismatches at once, by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np


class ConversionError(ValueError):
    """The weights do not fit the architecture; the message lists every problem.

    ``missing`` / ``unexpected`` / ``mismatched``: the key lists behind the message;
    ``whole_table``: True when they come from checking every key against a layout's
    table (:func:`apply_rules`), False when a key the architecture is read from is
    missing before that.
    """

    def __init__(self, message: str, *, missing=(), unexpected=(), mismatched=(),
                 whole_table: bool = False):
        super().__init__(message)
        self.missing, self.unexpected = list(missing), list(unexpected)
        self.mismatched, self.whole_table = list(mismatched), whole_table


def identity(x: np.ndarray) -> np.ndarray:
    return x


def linear_kernel(w: np.ndarray) -> np.ndarray:
    """torch Linear weight [out, in] -> Flax Dense kernel [in, out]."""
    return np.ascontiguousarray(w.T)


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """torch Conv2d weight OIHW -> Flax Conv kernel HWIO."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


@dataclasses.dataclass(frozen=True)
class Rule:
    torch_key: str
    flax_path: tuple[str, ...]  # e.g. ("params", "conv1", "kernel")
    transform: Callable[[np.ndarray], np.ndarray] = identity


def _flatten(tree: Any) -> dict[tuple[str, ...], Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {tuple(str(k.key) for k in path): leaf for path, leaf in flat}


def _unflatten(flat: dict[tuple[str, ...], Any]) -> dict:
    root: dict = {}
    for path, leaf in flat.items():
        node = root
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = leaf
    return root


def apply_rules(state_dict: dict[str, np.ndarray], rules: Iterable[Rule],
                expected: Any, *, source: str, ignore: Iterable[str] = (),
                ignore_prefixes: Iterable[str] = ()) -> dict:
    """Builds the Flax variables tree from ``state_dict`` following ``rules``.

    Args:
      state_dict: torch name -> float32 numpy array.
      rules: the explicit key table.
      expected: abstract variables (``jax.eval_shape`` of ``module.init``).
      source: file/folder name, used in error messages.
      ignore: torch keys that are legitimately unused (e.g. ``num_batches_tracked``).
      ignore_prefixes: prefixes of unused torch keys (e.g. a text tower we do not need).

    Returns:
      Nested dict of float32 numpy arrays with exactly the paths of ``expected``.
    """
    rules = list(rules)
    ignore = set(ignore)
    ignore_prefixes = tuple(ignore_prefixes)
    exp = _flatten(expected)
    out: dict[tuple[str, ...], np.ndarray] = {}
    missing, shape_errors, unmapped_targets = [], [], []
    used = set()
    for rule in rules:
        if rule.torch_key not in state_dict:
            missing.append(rule.torch_key)
            continue
        used.add(rule.torch_key)
        value = np.asarray(rule.transform(state_dict[rule.torch_key]), np.float32)
        if rule.flax_path not in exp:
            unmapped_targets.append("/".join(rule.flax_path))
            continue
        want = tuple(exp[rule.flax_path].shape)
        if value.shape != want:
            shape_errors.append(
                f"{rule.torch_key} (-> {'/'.join(rule.flax_path)}): checkpoint "
                f"{tuple(state_dict[rule.torch_key].shape)} gives {value.shape}, "
                f"model expects {want}")
            continue
        out[rule.flax_path] = value
    unexpected = sorted(
        k for k in state_dict
        if k not in used and k not in ignore and not k.endswith("num_batches_tracked")
        and not (ignore_prefixes and k.startswith(ignore_prefixes)))
    not_filled = sorted("/".join(p) for p in exp if p not in out
                        and not any(r.flax_path == p for r in rules))
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
    if shape_errors:
        problems.append("shape mismatches:\n    " + "\n    ".join(shape_errors))
    if unmapped_targets or not_filled:
        problems.append("converter bug, Flax paths not matched: "
                        + ", ".join(unmapped_targets + not_filled))
    if problems:
        raise ConversionError(f"cannot convert {source}:\n  " + "\n  ".join(problems),
                              missing=missing, unexpected=unexpected,
                              mismatched=shape_errors + unmapped_targets + not_filled,
                              whole_table=True)
    return _unflatten(out)


@dataclasses.dataclass
class Converted:
    """What every family converter returns; ``texter_jax.converters.api`` saves it."""

    family: str  # registry family name, e.g. "resnet"
    config: dict[str, Any]  # JSON-ready config that `registry.build_model` accepts
    variables: dict  # Flax variables tree of float32 numpy arrays
    layout: str  # the source layout converted, e.g. "torchvision-resnet"
