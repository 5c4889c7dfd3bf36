"""A CLIP text tower as a host function ``texts -> float32 [N, E]`` (jit, few compiles)."""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from texter_jax.batching import pad_to_multiple
from texter_jax.text.tokenizer import ClipTokenizer

# Token batches are padded to a multiple of this, so a run compiles a handful of shapes.
BUCKET = 64


def text_encoder(clip, variables, clip_dir: str | os.PathLike | None = None
                 ) -> Callable[[list[str]], np.ndarray]:
    """``texts -> float32 [N, E]`` through ``clip.encode_text``.

    A model that tokenizes itself (``clip.tokenize``, e.g. the world's CLIP) is used as
    is; otherwise the tokenizer files in ``clip_dir`` (a converted CLIP folder) are read,
    and checked against the text tower's end-of-text id when it pools there.
    """
    if hasattr(clip, "tokenize"):
        tokenize = clip.tokenize
    else:
        if clip_dir is None:
            raise ValueError("this CLIP has no tokenizer of its own: pass the folder that "
                             "holds its tokenizer files")
        tokenize = ClipTokenizer.from_dir(clip_dir)
        cfg = clip.config
        if getattr(cfg, "text_pooling", None) == "eos" and \
                tokenize.eos_token_id != cfg.eos_token_id:
            raise ValueError(
                f"{clip_dir}: the tokenizer's <|endoftext|> id is {tokenize.eos_token_id} but "
                f"the text tower pools at id {cfg.eos_token_id}; every text would get the "
                "same embedding. Use the tokenizer files that belong to this checkpoint.")
    encode = jax.jit(lambda ids: clip.encode_text(variables, ids))

    def fn(texts: list[str]) -> np.ndarray:
        ids = np.asarray(tokenize(list(texts)), np.int32)
        ids, n = pad_to_multiple(ids, BUCKET)
        return np.asarray(encode(jnp.asarray(ids)))[:n]

    return fn
