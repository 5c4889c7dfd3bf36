"""CLIP's tokenizer against transformers' CLIPTokenizer (BPE files trained here), and the
files a converted CLIP folder carries (split from test_clip_parity.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from texter_jax.converters import clip as clip_conv  # noqa: E402
from texter_jax.text import ClipTokenizer, TokenizerError  # noqa: E402
from texter_jax.text.bpe import byte_symbols, train_merges  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip_tok")
    corpus = ["a photo of a cat", "a photo of a dog", "a photo of the striped cat",
              "the dog on the grass", "a cat on a sofa"] * 3
    merges = train_merges(corpus, 40)
    base = byte_symbols()
    vocab = base + [s + "</w>" for s in base] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return folder, {t: i for i, t in enumerate(vocab)}


def test_tokenizer_ids(bpe_dir):
    folder, vocab = bpe_dir
    tok = ClipTokenizer.from_dir(folder, context_length=12)
    assert tok.vocab_size == len(vocab)
    texts = ["a photo of a cat", "A  Dog on the GRASS!!", "zebra"]
    ids = tok(texts)
    assert ids.dtype == np.int32 and ids.shape == (3, 12)
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    # Words of the training corpus are whole tokens after 40 merges.
    words = [vocab[w + "</w>"] for w in ("a", "photo", "of", "a", "cat")]
    assert ids[0].tolist() == [bos, *words, eos] + [eos] * 5  # pad token = <|endoftext|>
    ref = transformers.CLIPTokenizer(vocab=str(folder / "vocab.json"),
                                     merges=str(folder / "merges.txt"))
    want = ref(texts, padding="max_length", truncation=True, max_length=12)["input_ids"]
    np.testing.assert_array_equal(ids, np.asarray(want))
    # Round trip up to CLIP's normalisation (lower case, one space; </w> decodes as a space).
    assert [tok.decode(r) for r in ids] == ["a photo of a cat", "a dog on the grass !!", "zebra"]
    long = tok(["a photo of a cat " * 10])[0]
    assert long[0] == bos and long[-1] == eos and len(long) == 12  # EOS kept on truncation


def test_tokenizer_refuses_useless_vocab(bpe_dir, tmp_path):
    with pytest.raises(TokenizerError, match="no CLIP tokenizer files"):
        ClipTokenizer.from_dir(tmp_path)
    # Near-empty files: transformers happily builds a 2-token tokenizer from them.
    (tmp_path / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(TokenizerError, match=rf"{tmp_path.name}.* only 2 tokens"):
        ClipTokenizer.from_dir(tmp_path)
    folder, vocab = bpe_dir
    with pytest.raises(TokenizerError, match="expects 49408"):
        ClipTokenizer.from_dir(folder, vocab_size=49408)


def test_tokenizer_files_and_no_torch(bpe_dir, tmp_path):
    folder, vocab = bpe_dir
    assert [p.name for p in clip_conv.tokenizer_files(folder)] == ["vocab.json", "merges.txt"]
    out = tmp_path / "model"
    out.mkdir()
    clip_conv.copy_tokenizer_files(folder, out)
    (out / "texter_config.json").write_text(json.dumps(
        {"family": "clip", "config": {"vocab_size": len(vocab), "context_length": 9}}))
    # A fresh interpreter: the core and the tokenizer must not import torch.
    code = textwrap.dedent(f"""
        import sys
        import texter_jax.models.clip
        from texter_jax.text import ClipTokenizer
        tok = ClipTokenizer.from_dir({str(out)!r})
        assert tok([ "a cat" ]).shape == (1, 9)
        bad = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
