"""Feature extraction over an image folder into memory-mappable shards, and their reader.

Output folder::

    <out>/manifest.json          format, inputs (count + sha256 of the file list),
                                 preprocessing, shard size, classes, skipped files, done flag
    <out>/features_00000.npy     float32 [n_i, D]   (n_i <= shard_size: unreadable files
    <out>/labels_00000.npy       int64 [n_i]         are skipped; -1 = no label)
    <out>/files_00000.json       {"files": [...n_i paths], "skipped": [{"path", "error"}]}

Shard ``i`` always covers inputs ``[i * shard_size, (i + 1) * shard_size)`` of the file
list, so an interrupted run resumes at the first shard whose ``files_*.json`` (written
last, atomically) is missing.

Host side: decoding and resizing run in a ``ThreadPoolExecutor`` (PIL releases the GIL
while decoding and resampling, so threads scale without the pickling cost of processes;
grain is not installed here and would add a dependency for the same effect). A sliding
window of futures keeps ``prefetch_batches`` batches decoding while the device runs.
Device side: one jitted forward at a fixed batch size (the last batch is padded), images
shipped as uint8 and converted to float32 [0, 1] on device; optionally sharded over
``jax.local_devices()`` on the batch axis.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from texter_jax.distributed import SINGLE, ProcessGroup
from texter_jax.io.atomic import write_bytes_atomic, write_json_atomic
from texter_jax.io.images import image_files, load_rgb, resize_center_crop

FORMAT = "texter_jax/features/v1"
MANIFEST = "manifest.json"

# name -> (resize of the shorter side, centre crop, PIL resampling filter name)
PREPROCESS: dict[str, tuple[int, int, str]] = {
    # classifier features for the aligner (release IMAGENET_TRANSFORMATION)
    "aligner": (224, 224, "bilinear"),
    # classifier features for the SAE (release train_sae.py)
    "sae": (256, 224, "bilinear"),
    # CLIP's own preprocessing (OpenAI clip: Resize(224, bicubic) + CenterCrop(224))
    "clip": (224, 224, "bicubic"),
}


class FeatureShardsError(ValueError):
    """A features folder is missing, incomplete, or was made from other inputs."""


# ----------------------------------------------------------------------------- inputs

def list_image_folder(root: str | os.PathLike) -> tuple[list[tuple[str, int]], list[str]]:
    """ImageFolder layout ``<root>/<class>/**/<img>`` -> ``([(abs path, label)], classes)``.

    Classes are the sorted sub-folder names (torchvision ``ImageFolder``); images directly
    under ``root`` with no class folders get label -1 (and ``classes == []``).
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder at {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    items: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        items += [(str(p), label) for p in image_files(root / name)]
    if not classes:
        items = [(str(p), -1) for p in image_files(root, recursive=False)]
    if not items:
        raise FileNotFoundError(f"no images under {root}")
    return items, classes


def read_file_list(path: str | os.PathLike) -> list[tuple[str, int]]:
    """A text file with one ``path`` or ``path<whitespace>label`` per line.

    Relative paths are taken relative to the list file's folder; ``#`` starts a comment.
    """
    path = Path(path).absolute()
    items = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)
        label = -1
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            line, label = parts[0], int(parts[1])
        p = Path(line)
        items.append((str(p if p.is_absolute() else path.parent / p), label))
    if not items:
        raise FileNotFoundError(f"{path}: no image paths listed")
    return items


def _inputs_digest(items: Sequence[tuple[str, int]]) -> str:
    h = hashlib.sha256()
    for p, label in items:
        h.update(f"{p}\t{label}\n".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- host side

def preprocess_image(path: str | os.PathLike, preprocess: str) -> np.ndarray:
    """Decodes one image as uint8 [S, S, 3] after the named preprocessing.

    EXIF orientation is applied; RGBA/LA/palette-with-transparency are composited on
    white, greyscale/CMYK/16-bit converted to RGB (``texter_jax.io.images.load_rgb``).
    Resize is torchvision's ``Resize(int)`` on a PIL image (shorter side to ``resize``,
    longer side truncated, antialiased), then ``CenterCrop`` with rounded offsets.

    Raises:
      texter_jax.io.images.ImageLoadError: the file cannot be decoded (names the file).
    """
    resize, crop, resample = PREPROCESS[preprocess]
    im = resize_center_crop(load_rgb(path), resize, crop, resample=resample)
    return np.asarray(im, dtype=np.uint8)


def _ordered_map(pool, fn, iterable: Iterable, window: int) -> Iterator:
    """``pool.map`` with at most ``window`` tasks in flight, results in input order.

    Each result is ``(True, value)`` or ``(False, exception)``.
    """
    def call(x):
        try:
            return True, fn(x)
        except Exception as e:  # reported and skipped by the caller
            return False, e

    pending: collections.deque = collections.deque()
    it = iter(iterable)
    for x in it:
        pending.append(pool.submit(call, x))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# ----------------------------------------------------------------------------- device side

def make_forward(features_fn: Callable, batch_size: int, *, variables: Any = None,
                 shard: bool = False):
    """Jits ``uint8 [B, S, S, 3] -> features_fn(float32 in [0, 1]) -> [B, D]``.

    Args:
      features_fn: ``fn(images)`` or, when ``variables`` is given,
        ``fn(variables, images)`` (variables then enter the jit as an argument instead of
        being baked into the program as constants).
      batch_size: the fixed batch size (checked against the device count when sharding).
      shard: with several devices, split inputs and outputs over a 1-D mesh of
        ``jax.local_devices()`` on the batch axis (variables replicated).

    Returns:
      ``forward(x_device) -> [B, D]`` and ``put(x_host) -> x_device`` (right sharding).
    """
    import jax
    import jax.numpy as jnp

    def fwd(v, x_u8):
        x = x_u8.astype(jnp.float32) / 255.0
        return features_fn(x) if v is None else features_fn(v, x)

    devices = jax.local_devices()  # this process's own (several processes: see distributed.py)
    if shard and len(devices) > 1:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

        if batch_size % len(devices):
            raise ValueError(f"batch size {batch_size} must be a multiple of the "
                             f"{len(devices)} devices to shard the batch axis")
        mesh = Mesh(np.asarray(devices), ("batch",))
        batch_sh, repl = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
        v_dev = None if variables is None else jax.device_put(variables, repl)
        jitted = jax.jit(fwd, in_shardings=(repl, batch_sh), out_shardings=batch_sh)
        return (lambda x: jitted(v_dev, x)), (lambda x: jax.device_put(x, batch_sh))
    v_dev = None if variables is None else jax.device_put(variables)
    jitted = jax.jit(fwd)
    return (lambda x: jitted(v_dev, x)), jnp.asarray


# ----------------------------------------------------------------------------- extraction

def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())


def _shard_done(out: Path, i: int) -> bool:
    return all((out / f"{stem}_{i:05d}.{ext}").is_file()
               for stem, ext in (("features", "npy"), ("labels", "npy"), ("files", "json")))


def extract_features(items: Sequence[tuple[str, int]], features_fn: Callable,
                     out: str | os.PathLike, *, preprocess: str,
                     batch_size: int = 64, shard_size: int = 4096,
                     num_workers: int | None = None, prefetch_batches: int = 4,
                     variables: Any = None, shard: bool = False,
                     classes: Sequence[str] = (),
                     extra_meta: dict[str, Any] | None = None,
                     progress: bool = True, group: ProcessGroup = SINGLE) -> Path:
    """Runs ``features_fn`` over images and writes feature shards (see module docstring).

    Args:
      items: ``[(path, label)]`` in the order the shards should hold them.
      features_fn: float32 [B, S, S, 3] in [0, 1] -> [B, D], traced once by ``jax.jit``;
        called as ``features_fn(variables, images)`` when ``variables`` is given.
      out: output folder; an existing one made from the same inputs and settings resumes.
      preprocess: a key of :data:`PREPROCESS`.
      batch_size: fixed device batch; the last batch of every shard is zero-padded.
      shard_size: inputs per shard (rounded up to a multiple of ``batch_size``).
      num_workers: decoding threads (default: CPU count).
      prefetch_batches: batches decoded ahead of the device.
      variables: optional pytree passed to ``features_fn`` as a jit argument.
      shard: split each batch over all ``jax.local_devices()`` (NamedSharding on batch).
      classes: class names stored in the manifest.
      extra_meta: more JSON fields for the manifest (e.g. the model folder).
      group: several processes (:mod:`texter_jax.distributed`): process ``p`` writes the
        shards ``i`` with ``i % count == p``; process 0 writes the manifest, before and
        (complete) after; all meet at barriers in between. Every process returns ``out``.

    Returns:
      ``out`` as a Path.
    """
    from tqdm.auto import tqdm

    if preprocess not in PREPROCESS:
        raise ValueError(f"preprocess must be one of {sorted(PREPROCESS)}, got {preprocess!r}")
    if not items:
        raise ValueError("no images to extract")
    out = Path(out)
    shard_size = -(-shard_size // batch_size) * batch_size
    crop = PREPROCESS[preprocess][1]
    num_shards = -(-len(items) // shard_size)
    settings = {"format": FORMAT, "num_inputs": len(items),
                "inputs_sha256": _inputs_digest(items), "preprocess": preprocess,
                "image_size": crop, "shard_size": shard_size, "num_shards": num_shards}
    manifest_path = out / MANIFEST
    manifest = {**settings, "classes": list(classes), "complete": False, **(extra_meta or {})}
    complete, refused = False, None
    if group.is_main:
        try:
            complete = _open_output(out, settings)
            if not complete:
                write_json_atomic(manifest_path, manifest)
        except FeatureShardsError as e:
            refused = e  # raised after the barrier: the others then see the same folder
    group.barrier("texter-extract-manifest")
    if refused is not None:
        raise refused
    if not group.is_main:
        complete = _open_output(out, settings, clean=False)
    if complete:
        return out

    mine = [i for i in range(num_shards) if group.owns(i)]
    todo = [i for i in mine if not _shard_done(out, i)]
    mine_inputs = sum(min(shard_size, len(items) - i * shard_size) for i in mine)
    done_inputs = mine_inputs - sum(min(shard_size, len(items) - i * shard_size) for i in todo)
    forward, put = make_forward(features_fn, batch_size, variables=variables, shard=shard)
    workers = num_workers or os.cpu_count() or 1
    todo_items = ((i, p) for i in todo
                  for p, _ in items[i * shard_size:(i + 1) * shard_size])
    bar = tqdm(total=mine_inputs, initial=done_inputs, unit="img", disable=not progress,
               desc="extract" if group.count == 1 else f"extract ({group.index})",
               smoothing=0.1)
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        loaded = _ordered_map(pool, lambda ip: preprocess_image(ip[1], preprocess),
                              todo_items, window=max(1, prefetch_batches) * batch_size)
        for i in todo:
            shard_items = items[i * shard_size:(i + 1) * shard_size]
            outs, files, labels, skipped = [], [], [], []
            buf = np.zeros((batch_size, crop, crop, 3), np.uint8)
            fill = 0

            host_feats: list[np.ndarray] = []

            def flush(n):
                # Async dispatch: the device works while the host decodes the next batch;
                # at most two batches wait on the device, so host memory stays bounded.
                outs.append((forward(put(buf.copy())), n))
                while len(outs) > 2:
                    o, k = outs.pop(0)
                    host_feats.append(np.asarray(o)[:k])

            for path, label in shard_items:
                ok, value = next(loaded)
                bar.update(1)
                if not ok:
                    skipped.append({"path": path, "error": str(value)})
                    continue
                buf[fill] = value
                files.append(path)
                labels.append(label)
                fill += 1
                if fill == batch_size:
                    flush(fill)
                    fill = 0
            if fill:
                buf[fill:] = 0
                flush(fill)
            host_feats.extend(np.asarray(o)[:k] for o, k in outs)
            feats = np.concatenate(host_feats, 0) if host_feats else None
            if feats is None:  # every image of the shard was unreadable
                d = manifest.get("feature_dim")
                feats = np.zeros((0, d or 0), np.float32)
            else:
                manifest.setdefault("feature_dim", int(feats.shape[1]))
            _save_npy_atomic(out / f"features_{i:05d}.npy", feats.astype(np.float32))
            _save_npy_atomic(out / f"labels_{i:05d}.npy", np.asarray(labels, np.int64))
            write_json_atomic(out / f"files_{i:05d}.json", {"files": files, "skipped": skipped})
    bar.close()
    group.barrier("texter-extract-shards")
    if not group.is_main:
        group.barrier("texter-extract-done")
        return out
    # Summarise from the shard files (covers shards written by an earlier, killed run).
    skipped_all, n_feat, dim = [], 0, None
    for i in range(num_shards):
        meta = json.loads((out / f"files_{i:05d}.json").read_text())
        skipped_all.extend(meta["skipped"])
        arr = np.load(out / f"features_{i:05d}.npy", mmap_mode="r")
        n_feat += arr.shape[0]
        if arr.shape[0]:
            dim = int(arr.shape[1])
    manifest.update({"complete": True, "num_features": n_feat, "feature_dim": dim,
                     "skipped": skipped_all,
                     "seconds_last_run": round(time.perf_counter() - t0, 3)})
    write_json_atomic(manifest_path, manifest)
    group.barrier("texter-extract-done")
    if skipped_all and progress:
        print(f"skipped {len(skipped_all)} unreadable image(s); listed in {manifest_path}")
    return out


def _open_output(out: Path, settings: dict[str, Any], clean: bool = True) -> bool:
    """Checks ``out`` can take these features; True if it already holds them, complete."""
    if (out / MANIFEST).is_file():
        old = _read_manifest(out)
        diff = [k for k in settings if old.get(k) != settings[k]]
        if diff:
            raise FeatureShardsError(
                f"{out} holds features made with other inputs or settings ({', '.join(diff)} "
                "differ); choose another output folder or delete it")
        if old.get("complete"):
            return True
    elif out.exists() and any(out.iterdir()):
        raise FeatureShardsError(f"{out} exists, is not empty and has no {MANIFEST}; "
                                 "refusing to write features into it")
    out.mkdir(parents=True, exist_ok=True)
    if clean:
        for stray in out.glob(".*.tmp"):  # half-written files of a killed run
            stray.unlink()
    return False


# ----------------------------------------------------------------------------- reading

def _read_manifest(path: Path) -> dict[str, Any]:
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
            self.manifest = _read_manifest(self.path)
            if not self.manifest.get("complete") and not allow_incomplete:
                raise FeatureShardsError(
                    f"{self.path}: extraction is incomplete; rerun the same "
                    "`texter extract-features` command to finish it")
            n = int(self.manifest["num_shards"])
            idx = [i for i in range(n) if _shard_done(self.path, i)]
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
