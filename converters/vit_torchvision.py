"""torchvision ``VisionTransformer`` state dicts -> ``vit`` Flax (layout ``torchvision-vit``).

Keys: ``conv_proj``, ``class_token``, ``encoder.pos_embedding``,
``encoder.layers.encoder_layer_N.{ln_1, self_attention.{in_proj_*, out_proj}, ln_2, mlp.0,
mlp.3}``, ``encoder.ln``, ``heads.head`` (older files: ``mlp.linear_1/linear_2``).
"""

from __future__ import annotations

import re

import numpy as np

from texter_jax.converters.mapping import ConversionError, Converted
from texter_jax.converters.state_dict import Source
from texter_jax.converters.vit_rules import (
    TORCHVISION_HEADS,
    check_num_classes,
    convert_with_rules,
    count_blocks,
    dense_rules,
    embedding_rules,
    grid_image_size,
    head_count,
    norm_rules,
    packed_qkv_rules,
    require_keys,
)
from texter_jax.models import vit as vit_model


def _torchvision_keys(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # torchvision < 0.13 named the MLP linears linear_1/linear_2 (its MLPBlock still
    # renames them on load); accept those files too.
    return {re.sub(r"\.mlp\.linear_([12])\.",
                   lambda m: f".mlp.{3 * (int(m.group(1)) - 1)}.", k): v
            for k, v in sd.items()}


def convert_torchvision_vit(source: Source, *, num_classes: int | None = None,
                            num_heads: int | None = None) -> Converted:
    """torchvision ``VisionTransformer`` state dict -> ``vit`` family.

    Args:
      source: weights read by :func:`texter_jax.converters.state_dict.read_source`.
      num_classes: if given, the checkpoint's head must have this many classes.
      num_heads: attention heads; needed only for non-standard widths (the published
        ViT-B/L/H widths imply 12/16/16).
    """
    sd = _torchvision_keys(source.state_dict)
    where = source.path
    if any(k.startswith("heads.pre_logits") for k in sd):
        raise ConversionError(
            f"{where}: torchvision ViT with representation_size (heads.pre_logits + tanh) "
            "is not supported: TEXTER needs a linear head on the class token")
    if any(k.startswith("conv_proj.conv_") or k.startswith("conv_proj.0") for k in sd):
        raise ConversionError(f"{where}: torchvision ViT with a conv stem is not supported")
    require_keys(sd, ["conv_proj.weight", "encoder.pos_embedding", "heads.head.weight",
                      "encoder.layers.encoder_layer_0.mlp.0.weight"], where, "torchvision-vit")
    width, _, patch, _ = sd["conv_proj.weight"].shape
    depth = count_blocks(sd, r"encoder\.layers\.encoder_layer_(\d+)\.")
    classes = sd["heads.head.weight"].shape[0]
    check_num_classes(classes, num_classes, where)
    cfg = vit_model.ViTConfig(
        image_size=grid_image_size(sd["encoder.pos_embedding"].shape, patch, where),
        patch_size=patch, hidden_size=width, depth=depth,
        num_heads=head_count(width, TORCHVISION_HEADS, num_heads, where, "torchvision ViT"),
        mlp_dim=sd["encoder.layers.encoder_layer_0.mlp.0.weight"].shape[0],
        num_classes=classes, layer_norm_eps=1e-6)  # torchvision hard-codes eps 1e-6
    rules = embedding_rules("conv_proj", "class_token", "encoder.pos_embedding")
    for i in range(depth):
        t, b = f"encoder.layers.encoder_layer_{i}", f"blocks_{i}"
        rules += norm_rules(f"{t}.ln_1", (b, "ln1"))
        rules += packed_qkv_rules(f"{t}.self_attention.in_proj_weight",
                                  f"{t}.self_attention.in_proj_bias", b)
        rules += dense_rules(f"{t}.self_attention.out_proj", (b, "attn", "out"))
        rules += norm_rules(f"{t}.ln_2", (b, "ln2"))
        rules += dense_rules(f"{t}.mlp.0", (b, "mlp", "fc1"))
        rules += dense_rules(f"{t}.mlp.3", (b, "mlp", "fc2"))
    rules += norm_rules("encoder.ln", ("norm",))
    rules += dense_rules("heads.head", ("classifier",))
    return convert_with_rules(vit_model.FAMILY, "torchvision-vit", cfg, vit_model.build, sd,
                              rules, where)
