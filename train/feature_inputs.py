"""The inputs of feature extraction: an image folder or a file list as ``[(path, label)]``.

:func:`inputs_digest` fingerprints such a list; the manifest stores it so that a resumed
run can tell it is given the same inputs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from texter_jax.io.images import image_files


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
    for line in path.read_text().splitlines():
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


def inputs_digest(items: Sequence[tuple[str, int]]) -> str:
    h = hashlib.sha256()
    for p, label in items:
        h.update(f"{p}\t{label}\n".encode())
    return h.hexdigest()
