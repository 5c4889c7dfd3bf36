"""The on-disk format of extracted features and :class:`FeatureShards`, its reader.

A features folder holds ``manifest.json`` (:data:`MANIFEST`, format :data:`FORMAT`) and
per shard ``i`` the files ``features_{i:05d}.npy``, ``labels_{i:05d}.npy`` and
``files_{i:05d}.json``; see :mod:`texter_jax.train.features` for the layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "texter_jax/features/v1"
MANIFEST = "manifest.json"


class FeatureShardsError(ValueError):
    """A features folder is missing, incomplete, or was made from other inputs."""


def shard_done(out: Path, i: int) -> bool:
    """Whether all three files of shard ``i`` are in ``out`` (``files_*.json`` comes last)."""
    return all((out / f"{stem}_{i:05d}.{ext}").is_file()
               for stem, ext in (("features", "npy"), ("labels", "npy"), ("files", "json")))


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the features folder ``path``, checked to be of :data:`FORMAT`."""
    try:
        meta = json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FeatureShardsError(f"cannot read {path / MANIFEST}: {e}") from e
    if meta.get("format") != FORMAT:
        raise FeatureShardsError(f"{path / MANIFEST}: format {meta.get('format')!r}, "
                                 f"expected {FORMAT!r}")
    return meta


class FeatureShards:
    """Memory-mapped view of an extracted features folder (or of one ``.npy`` file).

    Rows are numbered across shards in order. ``take`` gathers arbitrary rows.

    Attributes:
      path: the folder or file.
      manifest: the manifest dict (``{}`` for a bare ``.npy``).
      labels: int64 [N] (-1 where unknown).
    """

    def __init__(self, path: str | os.PathLike, *, allow_incomplete: bool = False):
        self.path = Path(path)
        if self.path.is_file() and self.path.suffix == ".npy":
            self.manifest: dict[str, Any] = {}
            self._arrays = [np.load(self.path, mmap_mode="r")]
            self.labels = np.full(self._arrays[0].shape[0], -1, np.int64)
            self._file_lists: list[Path] | None = None
        else:
            if not (self.path / MANIFEST).is_file():
                raise FeatureShardsError(
                    f"{self.path} is not a features folder ({MANIFEST} missing; create one "
                    "with `texter extract-features`)")
            self.manifest = read_manifest(self.path)
            if not self.manifest.get("complete") and not allow_incomplete:
                raise FeatureShardsError(
                    f"{self.path}: extraction is incomplete; rerun the same "
                    "`texter extract-features` command to finish it")
            n = int(self.manifest["num_shards"])
            idx = [i for i in range(n) if shard_done(self.path, i)]
            self._arrays = [np.load(self.path / f"features_{i:05d}.npy", mmap_mode="r")
                            for i in idx]
            labels = [np.load(self.path / f"labels_{i:05d}.npy") for i in idx]
            self.labels = (np.concatenate(labels) if labels else np.zeros(0, np.int64))
            self._file_lists = [self.path / f"files_{i:05d}.json" for i in idx]
        self._arrays = [a for a in self._arrays if a.shape[0]]
        if not self._arrays:
            raise FeatureShardsError(f"{self.path}: no feature rows")
        dims = {a.shape[1] for a in self._arrays}
        if len(dims) != 1:
            raise FeatureShardsError(f"{self.path}: shards disagree on the feature size {dims}")
        self.dim = dims.pop()
        self._offsets = np.cumsum([0] + [a.shape[0] for a in self._arrays])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def files(self) -> list[str]:
        """Source image path of every row (empty strings for a bare ``.npy``)."""
        if self._file_lists is None:
            return [""] * len(self)
        out: list[str] = []
        for f in self._file_lists:
            out.extend(json.loads(f.read_text())["files"])
        return out

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` (int [M], any order) as float32 [M, D]."""
        indices = np.asarray(indices, np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"row index out of range [0, {len(self)})")
        out = np.empty((indices.shape[0], self.dim), np.float32)
        shard = np.searchsorted(self._offsets, indices, side="right") - 1
        for s in np.unique(shard):
            sel = shard == s
            local = indices[sel] - self._offsets[s]
            order = np.argsort(local, kind="stable")  # sequential reads within a shard
            rows = np.asarray(self._arrays[s][local[order]], np.float32)
            dest = np.flatnonzero(sel)[order]
            out[dest] = rows
        return out

    def read_all(self) -> np.ndarray:
        """All rows as one float32 [N, D] array in memory."""
        return np.concatenate([np.asarray(a, np.float32) for a in self._arrays], 0)
