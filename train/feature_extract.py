"""Feature extraction over a list of images into memory-mappable shards (resumable).

:func:`extract_features` decodes on the host (:mod:`texter_jax.train.feature_decode`), runs the
jitted forward (:mod:`texter_jax.train.feature_forward`) and writes the shards and manifest of
:mod:`texter_jax.train.feature_shards`, one atomic file at a time, so an interrupted run resumes.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from texter_jax.distributed import SINGLE, ProcessGroup
from texter_jax.io.atomic import write_bytes_atomic, write_json_atomic
from texter_jax.train.feature_decode import PREPROCESS, ordered_map, preprocess_image
from texter_jax.train.feature_forward import make_forward
from texter_jax.train.feature_inputs import inputs_digest
from texter_jax.train.feature_shards import (
    FORMAT,
    MANIFEST,
    FeatureShardsError,
    read_manifest,
    shard_done,
)


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())


def extract_features(items: Sequence[tuple[str, int]], features_fn: Callable,
                     out: str | os.PathLike, *, preprocess: str,
                     image_size: int | None = None, batch_size: int = 64, shard_size: int = 4096,
                     num_workers: int | None = None, prefetch_batches: int = 4,
                     variables: Any = None, shard: bool = False,
                     classes: Sequence[str] = (),
                     extra_meta: dict[str, Any] | None = None,
                     extra_settings: dict[str, Any] | None = None,
                     progress: bool = True, group: ProcessGroup = SINGLE) -> Path:
    """Runs ``features_fn`` over images and writes feature shards (layout:
    :mod:`texter_jax.train.features`).

    Args:
      items: ``[(path, label)]`` in the order the shards should hold them.
      features_fn: float32 [B, S, S, 3] in [0, 1] -> [B, D], traced once by ``jax.jit``;
        called as ``features_fn(variables, images)`` when ``variables`` is given.
      out: output folder; an existing one made from the same inputs and settings resumes.
      preprocess: a key of :data:`PREPROCESS`.
      image_size: side of the model's input (default the release's 224); the named
        preprocessing is scaled to it (e.g. ``sae``: Resize(S * 256/224) + CenterCrop(S)).
      batch_size: fixed device batch; the last batch of every shard is zero-padded.
      shard_size: inputs per shard (rounded up to a multiple of ``batch_size``).
      num_workers: decoding threads (default: CPU count).
      prefetch_batches: batches decoded ahead of the device.
      variables: optional pytree passed to ``features_fn`` as a jit argument.
      shard: split each batch over all ``jax.local_devices()`` (NamedSharding on batch).
      classes: class names stored in the manifest.
      extra_meta: more JSON fields for the manifest (e.g. the model folder).
      extra_settings: more JSON fields that, like the inputs and preprocessing, an
        existing folder must match to be resumed (e.g. the layer the features come from).
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
    crop = image_size or PREPROCESS[preprocess][1]
    num_shards = -(-len(items) // shard_size)
    settings = {"format": FORMAT, "num_inputs": len(items),
                "inputs_sha256": inputs_digest(items), "preprocess": preprocess,
                "image_size": crop, "shard_size": shard_size, "num_shards": num_shards,
                **(extra_settings or {})}
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
    todo = [i for i in mine if not shard_done(out, i)]
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
        loaded = ordered_map(pool, lambda ip: preprocess_image(ip[1], preprocess, crop),
                              todo_items, window=max(1, prefetch_batches) * batch_size)
        for i in todo:
            shard_items = items[i * shard_size:(i + 1) * shard_size]
            outs, files, labels, skipped = [], [], [], []
            buf = np.zeros((batch_size, crop, crop, 3), np.uint8)
            fill = 0

            host_feats: list[np.ndarray] = []

            def flush(n, outs=outs, buf=buf, host_feats=host_feats):  # this shard's lists
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
        old = read_manifest(out)
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
