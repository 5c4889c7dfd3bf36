"""CLIP's byte-level BPE tokenizer, loaded from the files next to a checkpoint.

The BPE itself is ``transformers.CLIPTokenizer`` (imported lazily: transformers is the
optional ``[convert]`` extra and does not pull in torch for tokenizing). This wrapper
adds what the rest of texter_jax needs: fixed-length int32 batches for
``Clip.encode_text`` and a loud failure where transformers silently returns a useless
tokenizer (an offline ``from_pretrained`` on a folder without vocabulary files gives a
2-token tokenizer instead of an error).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# A byte-level BPE vocabulary holds at least the 256 byte symbols plus
# <|startoftext|> and <|endoftext|>; anything smaller cannot tokenize arbitrary text.
MIN_VOCAB_SIZE = 256 + 2
DEFAULT_CONTEXT_LENGTH = 77  # OpenAI CLIP's text context
# A converted model folder (texter_jax.io.checkpoints.CONFIG_NAME), read for its sizes.
_MODEL_CONFIG_NAME = "texter_config.json"


class TokenizerError(ValueError):
    """The tokenizer files are missing or do not make a usable CLIP tokenizer."""


def _import_clip_tokenizer():
    try:
        from transformers import CLIPTokenizer
    except ImportError as e:
        raise TokenizerError(
            "the CLIP tokenizer needs the `transformers` package: "
            "pip install texter_jax[convert]") from e
    return CLIPTokenizer


def _model_sizes(folder: Path) -> dict[str, Any]:
    """``vocab_size`` / ``context_length`` of a converted CLIP model folder, if it is one."""
    path = folder / _MODEL_CONFIG_NAME
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    if meta.get("family") != "clip":
        return {}
    cfg = meta.get("config", {})
    return {k: cfg[k] for k in ("vocab_size", "context_length") if k in cfg}


class ClipTokenizer:
    """Texts -> CLIP token ids, ``[N, context_length]`` int32, padded like HF CLIP.

    Each row is ``<|startoftext|> tokens... <|endoftext|>`` followed by the tokenizer's
    pad token; texts too long are truncated *before* ``<|endoftext|>``, which is always
    kept (the text tower pools at it).

    Build with :meth:`from_dir`.
    """

    def __init__(self, hf_tokenizer, *, context_length: int = DEFAULT_CONTEXT_LENGTH,
                 source: str = "<memory>"):
        self._tok = hf_tokenizer
        self.context_length = int(context_length)
        self.source = source
        if self._tok.pad_token_id is None:
            raise TokenizerError(f"tokenizer at {source} defines no pad token")

    @classmethod
    def from_dir(cls, path: str | os.PathLike, *, context_length: int | None = None,
                 vocab_size: int | None = None) -> ClipTokenizer:
        """Loads ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``) from ``path``.

        Args:
          path: an HF CLIP folder or a converted texter_jax CLIP model folder (its
            ``texter_config.json`` then supplies ``context_length`` and ``vocab_size``).
          context_length: row length L; default: the model folder's, else 77.
          vocab_size: the text tower's vocabulary size; when known (given, or from the
            model folder) the tokenizer must have exactly this many tokens.

        Raises:
          TokenizerError: files missing, a vocabulary too small to be real (the silent
            2-token tokenizer), or a size that does not match the model.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise TokenizerError(f"tokenizer folder not found: {folder}")
        has_bpe = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
        if not has_bpe and not (folder / "tokenizer.json").is_file():
            raise TokenizerError(
                f"{folder} has no CLIP tokenizer files (vocab.json + merges.txt, or "
                "tokenizer.json); copy them from the HF model folder (`texter convert` "
                "does this for HF sources)")
        sizes = _model_sizes(folder)
        context_length = context_length or sizes.get("context_length") or DEFAULT_CONTEXT_LENGTH
        vocab_size = vocab_size if vocab_size is not None else sizes.get("vocab_size")
        CLIPTokenizer = _import_clip_tokenizer()
        try:
            tok = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:  # transformers raises many types; name the folder.
            raise TokenizerError(f"cannot load the CLIP tokenizer in {folder}: {e}") from e
        n = len(tok)
        if n < MIN_VOCAB_SIZE:
            raise TokenizerError(
                f"the tokenizer loaded from {folder} has only {n} tokens (a real CLIP "
                f"vocabulary has 49408; at least {MIN_VOCAB_SIZE} are needed): its "
                "vocabulary files were not read. Check vocab.json / merges.txt there")
        if vocab_size is not None and n != vocab_size:
            raise TokenizerError(
                f"the tokenizer in {folder} has {n} tokens but the CLIP text tower expects "
                f"{vocab_size}: these tokenizer files belong to another model")
        return cls(tok, context_length=context_length, source=str(folder))

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    @property
    def pad_token_id(self) -> int:
        return int(self._tok.pad_token_id)

    @property
    def eos_token_id(self) -> int:
        return int(self._tok.eos_token_id)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> int32 [N, context_length] token ids (see class doc)."""
        if isinstance(texts, str):
            raise TypeError("pass a list of strings, not a single string")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.context_length), np.int32)
        enc = self._tok(texts, padding="max_length", truncation=True,
                        max_length=self.context_length, return_tensors="np")
        return np.asarray(enc["input_ids"], np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """One row of ids -> text, special and pad tokens dropped."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def __repr__(self) -> str:
        return (f"ClipTokenizer(source={self.source!r}, vocab_size={self.vocab_size}, "
                f"context_length={self.context_length})")
