"""Builders of small but real model folders for end-to-end tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from texter_jax.concepts.banks import generic_bank
from texter_jax.io.checkpoints import save_model
from texter_jax.models.registry import config_to_dict
from texter_jax.models.resnet import ResNetConfig, make_classifier, random_variables
from texter_jax.text.bpe import write_clip_tokenizer


def tiny_classifier_folder(out: Path, *, image_size=32, num_classes=5, seed=0) -> Path:
    """A small ResNet saved as a texter_jax model folder (family resnet)."""
    cfg = ResNetConfig(block="basic", depths=(1, 1), widths=(8, 16), stem_width=8,
                       num_classes=num_classes, image_size=image_size)
    clf = make_classifier(cfg)
    return save_model(out, "resnet", config_to_dict(cfg), random_variables(clf, seed))


def tiny_clip_folder(out: Path, work: Path, *, embed_dim=12, image_size=32, seed=0) -> Path:
    """A randomly initialised HF CLIPModel with BPE files built from the generic bank,
    saved with save_pretrained and converted with ``texter_jax.converters.api.convert``."""
    import torch
    import transformers

    from texter_jax.converters.api import convert

    hf = work / "hf_clip"
    vocab = write_clip_tokenizer(hf, generic_bank(), n_merges=300)
    torch.manual_seed(seed)
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                         num_attention_heads=4, num_hidden_layers=2,
                         max_position_embeddings=16,
                         # OpenAI's layout: <|startoftext|>, <|endoftext|> are the last ids.
                         bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                           num_hidden_layers=2, image_size=image_size, patch_size=8),
        projection_dim=embed_dim)
    transformers.CLIPModel(cfg).eval().save_pretrained(hf)
    return convert(hf, out)


def aligner_folder(out: Path, d_feat: int, d_clip: int, seed=0) -> Path:
    from texter_jax import aligner

    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(d_clip, d_feat)) / np.sqrt(d_feat)).astype(np.float32)
    b = (0.1 * rng.normal(size=d_clip)).astype(np.float32)
    return aligner.save(out, aligner.Aligner(w, b, method="closed_form"))


def sae_folder(out: Path, d: int, seed=0) -> Path:
    from texter_jax import sae
    from texter_jax.sae import SaeConfig, init_sae

    cfg = SaeConfig(input_dim=d, nb_concepts=4 * d, top_k=d // 2)
    params = jax.tree.map(np.asarray, init_sae(jax.random.key(seed), cfg))
    return sae.save(out, cfg, params)
