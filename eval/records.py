"""Per-image records (JSONL, append-only, resumable) and the artefact cache (.npz).

``records.jsonl`` holds one JSON object per line, one line per (image, method), each
appended and flushed as soon as it is computed, so an interrupted run loses at most the
line being written. On start the file is scanned: complete lines are kept, a truncated
last line (a crash mid-write) is cut off, and the (image, method) pairs already present
are skipped.

The cache keeps the expensive per-image artefacts -- the aligned concept-image crop
embeddings of TEXTER (MACO) and of each sanity variant, with label, probability and
units -- as ``<cache>/<key[:2]>/<key>.npz``, the key hashing the method's full
explanation config, the model identities and the image bytes. Metrics are recomputed
from it in milliseconds, so adding or changing a metric never re-runs MACO.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from texter_jax.io.atomic import write_bytes_atomic, write_json_atomic


def stable_hash(obj: Any, n: int = 16) -> str:
    """First ``n`` hex digits of sha256 of the canonical JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


class RecordStore:
    """Append-only JSONL of per-image records keyed by ``(image, method)``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records: list[dict] = []
        self.dropped_tail = False
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        good_end = 0
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            line = data[pos:] if nl < 0 else data[pos:nl]
            end = len(data) if nl < 0 else nl + 1
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    if nl < 0:  # a truncated last line: cut it off below
                        break
                    raise ValueError(f"{self.path}: line {len(self.records) + 1} is not "
                                     "JSON and is not the last line; fix or remove it") from None
                self.records.append(rec)
            if nl < 0:  # complete JSON without its newline: add one
                with open(self.path, "ab") as f:
                    f.write(b"\n")
                end = len(data) + 1
            good_end = end
            pos = end
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
            self.dropped_tail = True

    def done(self) -> set[tuple[str, str]]:
        return {(r["image"], r["method"]) for r in self.records}

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=False, allow_nan=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)


def part_path(main: str | os.PathLike, index: int, count: int) -> Path:
    """Process ``index`` of ``count``'s own records file beside ``main`` (``parts/``)."""
    main = Path(main)
    return main.parent / "parts" / f"{main.stem}.{index}-of-{count}{main.suffix}"


def merge_parts(main: str | os.PathLike, count: int, order: dict[str, int]) -> int:
    """Folds the ``count`` processes' part files into ``main``, atomically, then removes them.

    Records are keyed by ``(image, method)`` (a part's record replaces the same key in
    ``main``) and written in ``order[image]`` order, methods in first-seen order, so the
    merged file does not depend on how images were shared out. Returns the record count.
    """
    main = Path(main)
    merged: dict[tuple[str, str], dict] = {}
    parts = [part_path(main, i, count) for i in range(count)]
    for store in [RecordStore(main)] + [RecordStore(p) for p in parts if p.is_file()]:
        for r in store.records:
            merged[(r["image"], r["method"])] = r
    methods = {m: i for i, m in enumerate(dict.fromkeys(m for _, m in merged))}
    keys = sorted(merged, key=lambda k: (order.get(k[0], len(order)), k[0], methods[k[1]]))
    text = "".join(json.dumps(merged[k], sort_keys=False, allow_nan=True) + "\n"
                   for k in keys)
    write_bytes_atomic(main, text.encode("utf-8"))
    for p in parts:  # only once main holds their records
        p.unlink(missing_ok=True)
    return len(keys)


def gather_parts(main: str | os.PathLike, group, info: dict, order: dict[str, int]):
    """Several processes at the end of a run: each leaves ``info`` (JSON) beside its part
    file and waits; process 0 merges the parts into ``main`` (:func:`merge_parts`) and
    returns every process's ``info`` in process order; the others return None, once the
    merge is done. ``group``: a :class:`texter_jax.distributed.ProcessGroup`."""
    side = lambda i: part_path(main, i, group.count).with_suffix(".json")  # noqa: E731
    write_json_atomic(side(group.index), info)
    group.barrier("texter-eval-records")
    infos = None
    if group.is_main:
        infos = [json.loads(side(i).read_text()) for i in range(group.count)]
        merge_parts(main, group.count, order)
        for i in range(group.count):
            side(i).unlink()
    group.barrier("texter-eval-merged")
    return infos


class ArtifactCache:
    """``.npz`` files of named arrays under ``root``, keyed by strings."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(*parts: Any) -> str:
        return stable_hash(list(parts), 40)

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        p = self.path_for(key)
        if not p.is_file():
            self.misses += 1
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError):
            self.misses += 1
            return None  # corrupt: recomputed and overwritten
        self.hits += 1
        return out

    def store(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        write_bytes_atomic(self.path_for(key), buf.getvalue())


def rows(arrays: dict[str, np.ndarray], n: int) -> Iterable[dict[str, np.ndarray]]:
    """Splits ``{name: [B, ...]}`` into B dicts of per-row arrays."""
    for i in range(n):
        yield {k: np.asarray(v[i]) for k, v in arrays.items()}
