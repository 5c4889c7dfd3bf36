"""Orbax checkpoints of model variables plus a JSON config that rebuilds the model.

Layout of a converted model folder::

    <out>/texter_config.json   {"format", "family", "config", "source", "versions"}
    <out>/variables/           Orbax StandardCheckpointer tree of numpy float32 arrays

``load_model(path)`` returns ``(model, variables)`` ready for the pure stage functions.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp

from texter_jax.io.atomic import atomic_directory, write_json_atomic
from texter_jax.models.registry import FAMILIES, abstract_variables, build_model, family_module

FORMAT = "texter_jax/model/v1"
CONFIG_NAME = "texter_config.json"
VARIABLES_DIR = "variables"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, corrupt or of another kind."""


def _versions() -> dict[str, str]:
    return {"jax": jax.__version__, "flax": flax.__version__,
            "orbax": ocp.__version__}


def _to_numpy_tree(tree: Any) -> Any:
    # Orbax cannot restore numpy scalar leaves (ENV_FACTS): make everything an ndarray.
    return jax.tree.map(lambda x: np.asarray(x), tree)


def save_pytree(path: str | os.PathLike, tree: Any) -> None:
    """Saves a pytree of arrays with Orbax at ``path`` (must not exist)."""
    path = Path(path).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, _to_numpy_tree(tree))
        ckptr.wait_until_finished()


def restore_pytree(path: str | os.PathLike, target: Any | None = None) -> Any:
    """Restores a pytree saved by :func:`save_pytree`; leaves are numpy arrays.

    Args:
      path: the Orbax folder.
      target: optional abstract tree (``jax.ShapeDtypeStruct`` leaves) to restore into.
    """
    path = Path(path).absolute()
    if not path.is_dir():
        raise CheckpointError(f"no Orbax checkpoint folder at {path}")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            if target is None:
                meta = ckptr.metadata(path)
                tree_meta = getattr(meta, "item_metadata", meta)
                target = jax.tree.map(
                    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree_meta,
                    is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
            restored = ckptr.restore(path, target)
    except CheckpointError:
        raise
    except Exception as e:  # orbax raises many types; name the folder.
        raise CheckpointError(f"cannot restore Orbax checkpoint at {path}: {e}") from e
    return jax.tree.map(np.asarray, restored)


def save_model(out_dir: str | os.PathLike, family: str, config: dict[str, Any],
               variables: Any, *, source: dict[str, Any] | None = None,
               overwrite: bool = False, extra_files=()) -> Path:
    """Writes ``texter_config.json`` and the Orbax variables atomically.

    ``extra_files`` (e.g. tokenizer vocab.json / merges.txt) are copied beside them.
    Nothing is left at ``out_dir`` if anything fails.
    """
    out_dir = Path(out_dir).absolute()
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        for f in extra_files:
            shutil.copy2(f, tmp / Path(f).name)
        save_pytree(tmp / VARIABLES_DIR, variables)
        meta = {"format": FORMAT, "family": family, "config": config,
                "source": source or {}, "versions": _versions()}
        if family not in FAMILIES and family_module(family):
            meta["module"] = family_module(family)  # a registered family's builder
        write_json_atomic(tmp / CONFIG_NAME, meta)
    return out_dir


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise CheckpointError(
            f"{path} is not a texter_jax model folder: {CONFIG_NAME} is missing "
            "(create one with `texter convert`)")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {e}") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{cfg_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_model(path: str | os.PathLike):
    """Loads a converted model folder.

    Returns:
      ``(model, variables)``: the model object (a ``Classifier`` or a CLIP model) and
      its variables as a pytree of numpy arrays, shape-checked against the model.
    """
    path = Path(path)
    meta = read_model_config(path)
    model = build_model(meta["family"], meta["config"], module=meta.get("module"))
    expected = abstract_variables(model)
    variables = restore_pytree(path / VARIABLES_DIR)
    check_tree_matches(expected, variables, where=str(path / VARIABLES_DIR))
    return model, variables


def _flat(tree) -> dict[str, Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p): v
            for p, v in flat}


def check_tree_matches(expected: Any, actual: Any, *, where: str) -> None:
    """Raises CheckpointError naming missing/unexpected keys and shape mismatches."""
    exp, act = _flat(expected), _flat(actual)
    missing = sorted(set(exp) - set(act))
    unexpected = sorted(set(act) - set(exp))
    shapes = [f"{k}: expected {tuple(exp[k].shape)}, got {tuple(np.shape(act[k]))}"
              for k in sorted(set(exp) & set(act))
              if tuple(exp[k].shape) != tuple(np.shape(act[k]))]
    if missing or unexpected or shapes:
        lines = [f"variables at {where} do not match the model:"]
        if missing:
            lines.append("  missing: " + ", ".join(missing))
        if unexpected:
            lines.append("  unexpected: " + ", ".join(unexpected))
        if shapes:
            lines.append("  shape mismatch: " + "; ".join(shapes))
        raise CheckpointError("\n".join(lines))
