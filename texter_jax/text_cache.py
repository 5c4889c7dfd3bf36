"""On-disk cache of text embeddings, so concept texts are encoded once per text tower.

The release re-encodes every concept text with the CLIP text tower on each call; here
each embedding is a ``.npy`` file keyed by ``sha256(identity + "\\n" + text)``, where
``identity`` names the text encoder (see :func:`checkpoint_identity`) plus anything else
that changes the embedding (prompt template, normalisation). Only missing texts are
encoded, in batches, through a caller-supplied ``encode_fn``.

Layout::

    <root>/<sha256(identity)[:16]>/identity.txt
    <root>/<sha256(identity)[:16]>/<key[:2]>/<key>.npy      float32 [E]

Writes are atomic (temp file + rename), so concurrent runs never read half files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from texter_jax.io.atomic import write_bytes_atomic, write_text_atomic

EncodeFn = Callable[[list[str]], np.ndarray]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checkpoint_identity(path: str | os.PathLike, *, content: bool = False) -> str:
    """A string that changes whenever the model folder (or file) at ``path`` changes.

    By default: the ``texter_config.json`` text (if any) plus every file's relative path,
    size and mtime. A copied folder gets new mtimes, so it only misses the cache (never a
    stale hit). ``content=True`` hashes all bytes instead (stable across copies, slower:
    about 1 s per 500 MB).
    """
    root = Path(path).absolute()
    if not root.exists():
        raise FileNotFoundError(f"checkpoint_identity: {root} does not exist")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    cfg = root / "texter_config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    for f in files:
        rel = f.name if root.is_file() else str(f.relative_to(root))
        h.update(rel.encode())
        if content:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        else:
            st = f.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{'content' if content else 'stat'}:{h.hexdigest()}"


class TextEmbeddingCache:
    """Embeddings of strings for one text encoder, cached as ``.npy`` files.

    Args:
      root: cache folder (created on first write).
      identity: names the encoder and everything that changes its output.
    """

    def __init__(self, root: str | os.PathLike, identity: str):
        self.root = Path(root)
        self.identity = identity
        self.folder = self.root / _sha(identity)[:16]
        self.encode_calls = 0  # how many times encode_fn ran (tests, logging)

    def path_for(self, text: str) -> Path:
        key = _sha(self.identity + "\n" + text)
        return self.folder / key[:2] / f"{key}.npy"

    def load(self, text: str) -> np.ndarray | None:
        """The cached embedding float32 [E], or None (missing or unreadable)."""
        p = self.path_for(text)
        if not p.is_file():
            return None
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a corrupt file is re-encoded and overwritten
        return arr.astype(np.float32) if arr.ndim == 1 else None

    def store(self, text: str, emb: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(emb, np.float32), allow_pickle=False)
        write_bytes_atomic(self.path_for(text), buf.getvalue())

    def get(self, texts: Sequence[str], encode_fn: EncodeFn, *,
            batch_size: int = 256) -> np.ndarray:
        """Embeddings of ``texts`` in order, float32 [N, E].

        Missing texts (de-duplicated) go through ``encode_fn(list[str]) -> [n, E]`` in
        batches of ``batch_size``; the results are stored before returning.
        """
        texts = list(texts)
        found: dict[str, np.ndarray] = {}
        missing: list[str] = []
        for t in dict.fromkeys(texts):
            e = self.load(t)
            if e is None:
                missing.append(t)
            else:
                found[t] = e
        if missing and not (self.folder / "identity.txt").is_file():
            write_text_atomic(self.folder / "identity.txt", self.identity + "\n")
        for i in range(0, len(missing), batch_size):
            batch = missing[i:i + batch_size]
            out = np.asarray(encode_fn(batch), np.float32)
            self.encode_calls += 1
            if out.ndim != 2 or out.shape[0] != len(batch):
                raise ValueError(f"encode_fn returned {out.shape} for {len(batch)} texts; "
                                 "expected [N, E]")
            for t, e in zip(batch, out, strict=True):
                self.store(t, e)
                found[t] = e
        if not texts:
            return np.zeros((0, 0), np.float32)
        dims = {found[t].shape[0] for t in found}
        if len(dims) > 1:
            raise ValueError(f"cache {self.folder} holds embeddings of several sizes {dims}; "
                             "the identity does not pin down the encoder")
        return np.stack([found[t] for t in texts])

    def info(self) -> dict:
        n = sum(1 for _ in self.folder.rglob("*.npy")) if self.folder.is_dir() else 0
        return {"folder": str(self.folder), "identity": self.identity, "entries": n}

    def __repr__(self) -> str:
        return f"TextEmbeddingCache({json.dumps(self.info())})"


class TextMemo:
    """An in-memory ``text -> float32 [E]`` memo. Mutable on purpose: it is a cache.

    An immutable :class:`~texter_jax.session.Session` owns one, so that each distinct
    text is encoded (or read from the disk cache) once per session; it grows as texts
    are asked for and holds nothing else.
    """

    def __init__(self):
        self._rows: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct texts not memoised yet, in first-seen order."""
        return [t for t in dict.fromkeys(texts) if t not in self._rows]

    def add(self, texts: Sequence[str], emb) -> None:
        """Memoises ``emb`` float [N, E], row i for ``texts[i]``."""
        self._rows.update(zip(texts, np.asarray(emb, np.float32), strict=True))

    def stack(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [T, E] for texts that are all memoised."""
        return np.stack([self._rows[t] for t in texts])
