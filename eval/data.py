"""The evaluation set: an ImageFolder tree, its labels, a seeded sample, truth files.

Layout: ``<root>/<class folder>/<image>`` (ImageNet val in class folders, or any
ImageFolder). Folder names become class indices through ``--class-names`` when every
folder is listed there (by name, or by WordNet id for a Keras-style
``{"0": ["n01440764", "tench"], ...}`` index), else by sorted folder order when the
folders number exactly the classifier's classes (torchvision's ImageFolder rule, which
is ImageNet's index order for wnid folders).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from texter_jax.io.class_names import read_class_index  # noqa: F401 (re-export)
from texter_jax.io.images import image_files, load_preprocessed

TRUTH_FORMAT = "texter_jax/eval-truth/v1"


class EvalDataError(ValueError):
    """The image folder, class names or truth file do not fit; the message says how."""


@dataclasses.dataclass(frozen=True)
class EvalImage:
    """One image of the evaluation set.

    Attributes:
      path: the file.
      rel: its path relative to the root, with ``/`` (the record key).
      folder: its class folder name.
      label: true class index (-1 if unknown).
      image_id: a stable 31-bit integer from ``rel``; seeds the image's PRNG key, so an
        image's explanation does not depend on the sample or the batch it is in.
    """

    path: Path
    rel: str
    folder: str
    label: int
    image_id: int


def image_id(rel: str) -> int:
    """Stable 31-bit id of a relative path (sha256)."""
    return int(hashlib.sha256(rel.encode("utf-8")).hexdigest()[:8], 16) & 0x7FFFFFFF


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (cache keys: a replaced image never hits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_labels(folders: Sequence[str], names: Sequence[str], ids: Sequence[str] | None,
                  num_classes: int) -> tuple[dict[str, int], str]:
    """``{folder: class index}`` and the rule used (see module docstring)."""
    folders = sorted(set(folders))
    if all(f in names for f in folders):
        return {f: list(names).index(f) for f in folders}, "class names"
    if ids is not None and all(f in ids for f in folders):
        return {f: list(ids).index(f) for f in folders}, "class ids"
    if len(folders) == num_classes:
        return {f: i for i, f in enumerate(folders)}, "sorted folders"
    unknown = [f for f in folders if f not in names][:5]
    raise EvalDataError(
        f"cannot map {len(folders)} class folders to the classifier's {num_classes} "
        f"classes: folders {unknown} are not in --class-names, and sorted order needs "
        f"exactly {num_classes} folders")


def list_image_folder(root: str | os.PathLike, *, loose: bool = False
                      ) -> list[tuple[Path, str, str]]:
    """``(path, rel, folder)`` of every image under ``root/<folder>/``, sorted by rel.

    Files directly in ``root`` belong to no class and are left out unless ``loose``
    (unlabelled sets), where their folder is ``""``.
    """
    root = Path(root)
    if not root.is_dir():
        raise EvalDataError(f"{root} is not a folder (expected <root>/<class>/<image>)")
    out = []
    for p in image_files(root):
        rel = p.relative_to(root).as_posix()
        if "/" not in rel and not loose:
            continue
        out.append((p, rel, rel.split("/", 1)[0] if "/" in rel else ""))
    if not out:
        raise EvalDataError(f"no images in class folders under {root} "
                            "(expected <root>/<class>/<image>)")
    return out


def sample(images: Sequence[EvalImage], *, per_class: int | None, total: int | None,
           seed: int) -> list[EvalImage]:
    """Seeded sample: up to ``per_class`` per class folder, then up to ``total`` overall.

    Both draws are uniform without replacement from ``np.random.default_rng(seed)``;
    the result is sorted by ``rel`` so runs and resumes see the same order.
    """
    rng = np.random.default_rng(seed)
    chosen = list(images)
    if per_class is not None:
        by: dict[str, list[EvalImage]] = {}
        for im in chosen:
            by.setdefault(im.folder, []).append(im)
        chosen = []
        for f in sorted(by):
            group = by[f]
            pick = rng.permutation(len(group))[:per_class]
            chosen.extend(group[i] for i in sorted(pick))
    if total is not None and total < len(chosen):
        pick = rng.permutation(len(chosen))[:total]
        chosen = [chosen[i] for i in sorted(pick)]
    return sorted(chosen, key=lambda im: im.rel)


# The classifier-side choices of `texter eval --preprocess` (table: io.images.PREPROCESSINGS).
PREPROCESS = ("imagenet", "resize")


def load_for_classifier(path, size: int, preprocess: str = "imagenet") -> np.ndarray:
    """float32 [size, size, 3] in [0, 1] for the classifier (``"imagenet"`` or
    ``"resize"``, see :data:`texter_jax.io.images.PREPROCESSINGS`)."""
    if preprocess not in PREPROCESS:
        raise ValueError(f"preprocess must be one of {PREPROCESS}, got {preprocess!r}")
    return load_preprocessed(path, preprocess, size)


def load_for_clip(path, size: int) -> np.ndarray:
    """float32 [size, size, 3] in [0, 1]: CLIP's Resize(size, bicubic) + CenterCrop(size)."""
    return load_preprocessed(path, "clip", size)


@dataclasses.dataclass(frozen=True)
class Truth:
    """Ground truth for hit@k: what each image's explanation must name.

    Attributes:
      meaning: ``phrase -> (attribute, value)`` for the concept bank.
      images: ``rel -> ((attribute, value), ...)``: naming any pair is a hit.
    """

    meaning: dict[str, tuple[str, str]]
    images: dict[str, tuple[tuple[str, str], ...]]


def load_truth(path: str | os.PathLike) -> Truth:
    """Reads a truth file (:data:`TRUTH_FORMAT`, written by :mod:`texter_jax.world.eval_set`)::

        {"format": "texter_jax/eval-truth/v1",
         "meaning": {"grass background": ["background", "grass"], ...},
         "images": {"class_03/000012.png": [["background", "grass"]], ...}}
    """
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise EvalDataError(f"cannot read truth file {p}: {e}") from e
    if obj.get("format") != TRUTH_FORMAT:
        raise EvalDataError(f"{p}: format {obj.get('format')!r}, expected {TRUTH_FORMAT!r}")
    meaning = {str(k): (str(v[0]), str(v[1])) for k, v in obj["meaning"].items()}
    images = {str(k): tuple((str(a), str(v)) for a, v in pairs)
              for k, pairs in obj["images"].items()}
    return Truth(meaning, images)
