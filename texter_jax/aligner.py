"""The linear aligner of Text-to-Concept: its type, its maths and our folder format.

An aligner maps classifier features into CLIP's image space, ``h = z W^T + b``, with
``w`` float32 [E, D] and ``b`` float32 [E] (the release's ``W``/``b`` layout; TEXTER_SPEC
"The linear aligner"). Fitting it is ``train/aligner.py``'s job; the release's
``linear_aligner.pth`` is read and written by ``converters/release.py``; choosing between
the two formats by path is ``converters/artifacts.py``'s.

Folder format (``FORMAT``): ``<path>/aligner.json`` (format, method, dims, metrics) and an
Orbax ``<path>/params`` tree ``{"W", "b"}``, written atomically.

References:
  Moayeri et al., "Text-To-Concept (and Back) via Cross-Model Alignment", ICML 2023,
  https://arxiv.org/abs/2305.06386
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from texter_jax.io.atomic import atomic_directory, write_json_atomic
from texter_jax.io.checkpoints import CheckpointError, restore_pytree, save_pytree
from texter_jax.types import Array

FORMAT = "texter_jax/aligner/v1"
META_NAME = "aligner.json"
PARAMS_DIR = "params"


@dataclasses.dataclass(frozen=True)
class Aligner:
    """Linear map from classifier features to CLIP image space: ``h = z w^T + b``.

    Attributes:
      w: float32 [E, D].
      b: float32 [E].
      metrics: how it was fitted (``train_*`` / ``holdout_*`` regression metrics, ...);
        empty when unknown (e.g. a release file).
      method: the solver that produced it (``"closed_form"``, ``"sgd"``, ``"release"``).
    """

    w: Any
    b: Any
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    method: str = "unknown"

    @property
    def feature_dim(self) -> int:
        return int(self.w.shape[1])

    @property
    def embed_dim(self) -> int:
        return int(self.w.shape[0])


# A pytree: w and b are leaves (through jit, vmap, device_put and shardings as values);
# method and metrics ride along as static data (metrics as sorted JSON, so it hashes).
jax.tree_util.register_pytree_node(
    Aligner,
    lambda a: ((a.w, a.b), (a.method, json.dumps(a.metrics, sort_keys=True, default=str))),
    lambda aux, children: Aligner(*children, metrics=json.loads(aux[1]), method=aux[0]))


def align(w: Array, b: Array, z: Array) -> Array:
    """Linear aligner: features float [..., d_feat] -> CLIP-space [..., d_clip].

    Args:
      w: float [d_clip, d_feat] (release ``W``).
      b: float [d_clip].
      z: float [..., d_feat].
    """
    if w.shape[-1] != z.shape[-1] or b.shape != (w.shape[0],):
        raise ValueError(f"align: W {w.shape}, b {b.shape} do not fit features {z.shape}")
    return z @ w.T + b


def save(path: str | os.PathLike, aligner: Aligner, *, overwrite: bool = False,
         extra: dict[str, Any] | None = None) -> Path:
    """Writes the folder format at ``path`` atomically; returns the absolute path."""
    path = Path(path).absolute()
    w = np.asarray(aligner.w, np.float32)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        save_pytree(tmp / PARAMS_DIR, {"W": w, "b": np.asarray(aligner.b, np.float32)})
        write_json_atomic(tmp / META_NAME, {
            "format": FORMAT, "method": aligner.method,
            "feature_dim": int(w.shape[1]), "embed_dim": int(w.shape[0]),
            "metrics": aligner.metrics, **(extra or {})})
    return path


def load(path: str | os.PathLike) -> Aligner:
    """Reads a folder written by :func:`save`; raises CheckpointError otherwise."""
    path = Path(path)
    meta_path = path / META_NAME
    if not meta_path.is_file():
        raise CheckpointError(f"{path} is not an aligner folder: {META_NAME} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_path} is not valid JSON: {e}") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    tree = restore_pytree(path / PARAMS_DIR)
    if set(tree) != {"W", "b"}:
        raise CheckpointError(f"{path / PARAMS_DIR}: expected W and b, found {sorted(tree)}")
    return Aligner(np.asarray(tree["W"], np.float32), np.asarray(tree["b"], np.float32),
                   metrics=meta.get("metrics", {}), method=meta.get("method", "unknown"))
