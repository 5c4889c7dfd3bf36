"""DINO ViT backbone + ``eval_linear`` head -> ``dino_vit`` Flax (layout ``dino-vit``).

Backbones from facebookresearch/dino (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``) plus the
separately trained linear head (``linear.weight/bias``, often ``module.``-prefixed
inside ``{"state_dict": ...}``).
"""

from __future__ import annotations

from texter_jax.converters.mapping import ConversionError, Converted
from texter_jax.converters.state_dict import Source
from texter_jax.converters.vit_rules import (
    convert_with_rules,
    count_blocks,
    dense_rules,
    embedding_rules,
    grid_image_size,
    head_count,
    norm_rules,
    packed_qkv_rules,
    require_keys,
    strip_prefixes,
)
from texter_jax.models import dino as dino_model

# Heads of the published models, keyed by width; the head count is not in the weights.
_DINO_HEADS = {192: 3, 384: 6, 768: 12}  # vit_tiny, vit_small, vit_base


def convert_dino_vit(backbone: Source, head: Source, *, num_heads: int | None = None,
                     n_last_blocks: int | None = None,
                     avgpool_patchtokens: bool | None = None) -> Converted:
    """DINO ViT backbone + ``eval_linear`` head -> ``dino_vit`` family.

    Args:
      backbone: e.g. ``dino_deitsmall8_pretrain.pth`` (keys may carry ``module.`` or
        ``backbone.`` prefixes).
      head: e.g. ``dino_deitsmall8_linearweights.pth`` (``linear.weight/bias``, often as
        ``module.linear.*``).
      num_heads: needed only for non-standard widths (DINO ViT-T/S/B: 3/6/12).
      n_last_blocks, avgpool_patchtokens: the linear probe's input recipe. By default
        inferred from the head width as DINO's eval_linear does: 4 blocks without
        pooling (ViT-S, 4 * D inputs) or 1 block with pooling (ViT-B, 2 * D inputs).
    """
    where = f"{backbone.path} + {head.path}"
    sd = strip_prefixes(backbone.state_dict, ("module.", "backbone."))
    hsd = strip_prefixes(head.state_dict, ("module.",))
    require_keys(sd, ["patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"],
                 backbone.path, "dino-vit")
    require_keys(hsd, ["linear.weight", "linear.bias"], head.path, "DINO linear head")
    width, _, patch, _ = sd["patch_embed.proj.weight"].shape
    depth = count_blocks(sd, r"blocks\.(\d+)\.")
    classes, head_in = hsd["linear.weight"].shape
    if n_last_blocks is None and avgpool_patchtokens is None:
        if head_in == 4 * width:
            n_last_blocks, avgpool_patchtokens = 4, False
        elif head_in == 2 * width:
            n_last_blocks, avgpool_patchtokens = 1, True
        else:
            raise ConversionError(
                f"{where}: head takes {head_in} inputs, which is neither 4 x {width} "
                "(ViT-S recipe) nor 2 x {width} (ViT-B recipe); pass n_last_blocks and "
                "avgpool_patchtokens explicitly")
    cfg = dino_model.DinoViTConfig(
        image_size=grid_image_size(sd["pos_embed"].shape, patch, backbone.path),
        patch_size=patch, hidden_size=width, depth=depth,
        num_heads=head_count(width, _DINO_HEADS, num_heads, backbone.path, "DINO ViT"),
        mlp_dim=sd["blocks.0.mlp.fc1.weight"].shape[0], num_classes=classes,
        layer_norm_eps=1e-6,  # DINO's vit_* constructors fix eps 1e-6
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        n_last_blocks=int(n_last_blocks if n_last_blocks is not None else 4),
        avgpool_patchtokens=bool(avgpool_patchtokens))
    if head_in != cfg.feature_dim:
        raise ConversionError(
            f"{where}: head takes {head_in} inputs but n_last_blocks={cfg.n_last_blocks}, "
            f"avgpool_patchtokens={cfg.avgpool_patchtokens} give {cfg.feature_dim} features")
    rules = embedding_rules("patch_embed.proj", "cls_token", "pos_embed")
    for i in range(depth):
        t, b = f"blocks.{i}", f"blocks_{i}"
        rules += norm_rules(f"{t}.norm1", (b, "ln1"))
        rules += packed_qkv_rules(f"{t}.attn.qkv.weight",
                                  f"{t}.attn.qkv.bias" if cfg.qkv_bias else None, b)
        rules += dense_rules(f"{t}.attn.proj", (b, "attn", "out"))
        rules += norm_rules(f"{t}.norm2", (b, "ln2"))
        rules += dense_rules(f"{t}.mlp.fc1", (b, "mlp", "fc1"))
        rules += dense_rules(f"{t}.mlp.fc2", (b, "mlp", "fc2"))
    rules += norm_rules("norm", ("norm",))
    rules += dense_rules("linear", ("classifier",))
    # One key space: backbone names are disjoint from the head's `linear.*`.
    merged = dict(sd)
    clash = set(merged) & set(hsd)
    if clash:
        raise ConversionError(f"{where}: backbone and head share keys {sorted(clash)}")
    merged.update(hsd)
    # DINO's self-supervised projection head (`head.mlp.*`, `head.last_layer.*`) sits
    # next to the backbone in training checkpoints; it is not the classifier.
    return convert_with_rules(dino_model.FAMILY, "dino-vit", cfg, dino_model.build, merged,
                              rules, where, ignore_prefixes=("head.",))
