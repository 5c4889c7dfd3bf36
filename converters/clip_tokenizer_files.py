"""The tokenizer files of a Hugging Face CLIP folder, copied next to a converted model.

They are not weights: :func:`tokenizer_files` lists them and :func:`copy_tokenizer_files`
puts them next to the converted model, where ``texter_jax.text.ClipTokenizer.from_dir``
finds them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Tokenizer files of an HF CLIP folder, copied verbatim next to a converted model.
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")


def tokenizer_files(source_dir: str | os.PathLike) -> list[Path]:
    """The HF tokenizer files present in ``source_dir`` (see :data:`TOKENIZER_FILES`).

    Returns an empty list for a file source or a folder without them.
    """
    folder = Path(source_dir)
    if not folder.is_dir():
        return []
    return [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]


def copy_tokenizer_files(source_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Copies :func:`tokenizer_files` of ``source_dir`` into ``out_dir``; returns the copies."""
    out_dir = Path(out_dir)
    copied = []
    for path in tokenizer_files(source_dir):
        copied.append(Path(shutil.copy2(path, out_dir / path.name)))
    return copied
