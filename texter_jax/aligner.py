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

    A pytree whose leaves are ``w`` and ``b`` (method and metrics are static, see
    :class:`_Provenance`), so it passes whole through ``jit``, ``vmap`` and
    ``device_put``.

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

    def bare(self) -> Aligner:
        """The same w and b without provenance (no metrics, method "unknown"): what the
        compiled programs take, so aligners that differ only in how they were fitted
        share one compile."""
        return Aligner(self.w, self.b)


class _Provenance:
    """An Aligner's static (treedef) part: ``method`` and ``metrics``.

    Compared and hashed by content: metrics as sorted JSON text, with ``repr`` for what
    JSON lacks (a dict, or the lists in it, do not hash; a tuple reads as a list). Equal
    metrics give equal treedefs, so ``jit`` reuses its compile; other metrics are
    another treedef, a recompile (:meth:`Aligner.bare` drops them). Unflattening hands
    back the very metrics given (shared, not copied; not a JSON round trip).
    """

    __slots__ = ("method", "metrics", "_key")

    def __init__(self, method: str, metrics: dict[str, Any]):
        self.method, self.metrics = method, metrics
        self._key = (method, json.dumps(metrics, sort_keys=True, default=repr))

    def __eq__(self, other) -> bool:
        return isinstance(other, _Provenance) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"_Provenance(method={self.method!r}, metrics={self.metrics!r})"


# A pytree: w and b are the leaves (so jit, vmap, device_put and shardings take an
# Aligner whole); method and metrics ride along in the treedef.
jax.tree_util.register_pytree_with_keys(
    Aligner,
    lambda a: (((jax.tree_util.GetAttrKey("w"), a.w), (jax.tree_util.GetAttrKey("b"), a.b)),
               _Provenance(a.method, a.metrics)),
    lambda p, children: Aligner(*children, metrics=p.metrics, method=p.method),
    flatten_func=lambda a: ((a.w, a.b), _Provenance(a.method, a.metrics)))


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
