"""Writes randomly initialised checkpoints in the real on-disk formats users have:

* ``resnet50.pth``: torchvision ResNet-50 ``state_dict`` (torch.save);
* ``clip-vit-b16/``: HF ``CLIPModel`` ViT-B/16 (save_pretrained) plus CLIP-format
  tokenizer files (vocab 49408) built from the shipped concept bank;
* ``linear_aligner.pth``: the release's ``{"W": [512, 2048], "b": [512]}``;
* ``sae_model.pth``: the release's TopK SAE file (2048 -> 16384, k = 1638).

Used to run ``texter convert`` / ``texter explain`` end to end at real sizes offline::

    .venv/bin/python bench/make_random_checkpoints.py OUT_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import jax
    import numpy as np
    import torch
    import torchvision
    import transformers

    from texter_jax.concepts.banks import generic_bank
    from texter_jax.converters.release import export_release_aligner, export_release_sae
    from texter_jax.sae import SaeConfig, init_sae
    from texter_jax.text.bpe import write_clip_tokenizer

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    resnet = torchvision.models.resnet50(weights=None)
    torch.save(resnet.state_dict(), out / "resnet50.pth")
    print("wrote", out / "resnet50.pth")

    clip_dir = out / "clip-vit-b16"
    write_clip_tokenizer(clip_dir, generic_bank(), n_merges=3000, vocab_size=49408)
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8,
                         num_hidden_layers=12, vocab_size=49408, max_position_embeddings=77),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                           num_hidden_layers=12, patch_size=16, image_size=224),
        projection_dim=512)
    transformers.CLIPModel(cfg).eval().save_pretrained(clip_dir)
    print("wrote", clip_dir)

    rng = np.random.default_rng(args.seed)
    w = (rng.normal(size=(512, 2048)) / np.sqrt(2048)).astype(np.float32)
    b = (0.01 * rng.normal(size=512)).astype(np.float32)
    export_release_aligner(out / "linear_aligner.pth", w, b)
    print("wrote", out / "linear_aligner.pth")

    sae_cfg = SaeConfig.release_default(2048)
    params = jax.tree.map(np.asarray, init_sae(jax.random.key(args.seed), sae_cfg))
    export_release_sae(out / "sae_model.pth", sae_cfg, params)
    print("wrote", out / "sae_model.pth")


if __name__ == "__main__":
    main()
