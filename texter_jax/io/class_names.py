"""Class-name files: index -> name (and folder id), shared by explain, eval and training."""

from __future__ import annotations

import json
import os
from pathlib import Path


class ClassNamesError(ValueError):
    """A class-name file does not fit the classifier; the message names the file."""


def read_class_index(path: str | os.PathLike | None, num_classes: int
                     ) -> tuple[list[str], list[str] | None]:
    """Class names in index order, plus folder ids when the file gives them.

    Accepts .txt (one name per line), a JSON list, ``{index: name}`` or the Keras
    ``{index: [wnid, name]}`` form. Without a file: ``class_0 .. class_{C-1}``.
    """
    if path is None:
        return [f"class_{i}" for i in range(num_classes)], None
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    ids = None
    if p.suffix == ".json":
        obj = json.loads(text)
        if isinstance(obj, dict):
            vals = [obj.get(str(i), obj.get(i)) for i in range(num_classes)]
            if any(v is None for v in vals):
                raise ClassNamesError(f"{p}: indices 0..{num_classes - 1} are not all present")
            if all(isinstance(v, list) and len(v) == 2 for v in vals):
                ids = [str(v[0]) for v in vals]
                names = [str(v[1]) for v in vals]
            else:
                names = [str(v) for v in vals]
        else:
            names = [str(x) for x in obj]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_classes:
        raise ClassNamesError(f"{p}: {len(names)} class names for a classifier with "
                              f"{num_classes} classes")
    return names, ids
