"""Building CLIP-format BPE tokenizer files (vocab.json + merges.txt) from a corpus.

Real users load the tokenizer files shipped next to their CLIP checkpoint. These
helpers exist for what cannot download one: tests, benchmarks and the offline demo
build a small, valid CLIP-style vocabulary from the concept bank itself. The format is
the one ``transformers.CLIPTokenizer`` reads: byte-level symbols in CLIP's order, each
also with a ``</w>`` end-of-word variant, learned merges, then the two special tokens.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def byte_symbols() -> list[str]:
    """The 256 byte-level symbols (printable unicode stand-ins) in CLIP's order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def train_merges(corpus: Iterable[str], n_merges: int) -> list[tuple[str, str]]:
    """Greedy BPE merges (most frequent adjacent pair first; ties by the pair itself).

    Words are lower-cased ASCII-ish tokens split on whitespace; the last symbol of a
    word carries ``</w>`` as in CLIP.
    """
    words = Counter(w for line in corpus for w in line.lower().split())
    seqs = {w: [*w[:-1], w[-1] + "</w>"] for w in words}
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for w, s in seqs.items():
            for p in pairwise(s):
                pairs[p] += words[w]
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        for w, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def write_clip_tokenizer(folder: str | os.PathLike, corpus: Iterable[str], *,
                         n_merges: int = 2000, vocab_size: int | None = None) -> int:
    """Writes ``vocab.json`` and ``merges.txt`` into ``folder``.

    Args:
      corpus: texts to learn merges from (e.g. a concept bank).
      n_merges: maximum number of merges.
      vocab_size: pad the vocabulary with unused ``<|unused_i|>`` entries up to this
        size (a CLIP text tower's embedding table has a fixed size, e.g. 49408); the
        special tokens stay last, so ``<|endoftext|>`` is ``vocab_size - 1``.

    Returns:
      The vocabulary size written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = train_merges(corpus, n_merges)
    base = byte_symbols()
    vocab = base + [s + "</w>" for s in base]
    seen = set(vocab)
    for a, b in merges:
        if a + b not in seen:
            vocab.append(a + b)
            seen.add(a + b)
    if vocab_size is not None:
        if vocab_size < len(vocab) + 2:
            raise ValueError(f"vocab_size {vocab_size} < {len(vocab) + 2} tokens learned")
        # Padding goes before the special tokens so that, as in OpenAI's vocabulary,
        # <|endoftext|> has the largest id (vocab_size - 1): CLIP text towers pool there.
        vocab += [f"<|unused_{i}|>" for i in range(vocab_size - len(vocab) - 2)]
    vocab += [BOS, EOS]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}),
                                       encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return len(vocab)
