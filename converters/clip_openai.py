"""OpenAI ``clip`` (ViT) state dicts -> texter_jax ``clip`` (layout ``openai-clip``).

Keys ``visual.conv1.weight``, ``visual.transformer.resblocks.N.attn.in_proj_weight``,
``token_embedding.weight``, ``ln_final``, ``text_projection`` ...; the architecture is
read off the tensor shapes as OpenAI's ``build_model`` does. Only ViT image towers are
supported; ModifiedResNet towers (RN50, RN101, RN50x4, RN50x16, RN50x64) are refused.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

from texter_jax.converters.clip_rules import dense_rules, expected_variables, ln_rules, make_config
from texter_jax.converters.mapping import (
    ConversionError,
    Converted,
    Rule,
    apply_rules,
    conv_kernel,
    identity,
)
from texter_jax.converters.state_dict import Source
from texter_jax.converters.vit_rules import head_count
from texter_jax.models import clip as clip_model
from texter_jax.models.registry import config_to_dict

OPENAI_LAYOUT = "openai-clip"
OPENAI_HEAD_SIZE = 64  # build_model: heads = width // 64

# OpenAI ViT CLIP models the OpenAI layout path reproduces (any ViT shape is read off
# the tensors; these are the released ones).
OPENAI_VIT_MODELS = ("ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px")
OPENAI_RESNET_MODELS = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64")


def _rows(w: np.ndarray, *, start: int, stop: int, transpose: bool) -> np.ndarray:
    part = w[start:stop]
    return np.ascontiguousarray(part.T) if transpose else part


def _count_blocks(keys: Iterable[str], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in keys if k.startswith(prefix)})


def openai_clip_config(state_dict: dict[str, np.ndarray], *, activation: str = "quick_gelu",
                       num_heads: int | None = None, text_heads: int | None = None,
                       source: str = "OpenAI CLIP") -> clip_model.ClipConfig:
    """Architecture of an OpenAI-layout ViT CLIP read off its tensor shapes.

    Mirrors OpenAI's ``build_model``: head counts are width // 64 (their convention, not
    stored in the file) unless ``num_heads`` (image tower) / ``text_heads`` are given;
    a width that 64 does not divide needs them. LayerNorm eps 1e-5, text pooled at the
    largest token id.

    Raises:
      ConversionError: a ResNet image tower or missing tensors.
    """
    if "visual.proj" not in state_dict:
        if any(k.startswith(("visual.layer1.", "visual.attnpool.")) for k in state_dict):
            raise ConversionError(
                "this OpenAI CLIP checkpoint has a ResNet image tower "
                f"({'/'.join(OPENAI_RESNET_MODELS)}), which texter_jax does not support; "
                f"supported: the ViT models ({', '.join(OPENAI_VIT_MODELS)})")
        raise ConversionError("OpenAI CLIP state dict without visual.proj: not a ViT CLIP")
    needed = ("visual.conv1.weight", "visual.positional_embedding", "text_projection",
              "positional_embedding", "token_embedding.weight", "ln_final.weight",
              "visual.transformer.resblocks.0.mlp.c_fc.weight",
              "transformer.resblocks.0.mlp.c_fc.weight")
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise ConversionError(f"OpenAI CLIP state dict lacks {', '.join(missing)}",
                              missing=missing)
    conv = state_dict["visual.conv1.weight"]  # [width, 3, p, p]
    vision_width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = int(state_dict["ln_final.weight"].shape[0])
    vocab_size = int(state_dict["token_embedding.weight"].shape[0])
    # OpenAI has no head counts in the file: build_model fixes the head size at 64.
    return make_config(
        image_size=patch * grid,
        patch_size=patch,
        vision_width=vision_width,
        vision_layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
        vision_heads=head_count(vision_width, None, num_heads, source, "CLIP image tower",
                                head_size=OPENAI_HEAD_SIZE),
        vision_mlp=int(state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        vocab_size=vocab_size,
        context_length=int(state_dict["positional_embedding"].shape[0]),
        text_width=text_width,
        text_layers=_count_blocks(state_dict, "transformer.resblocks."),
        text_heads=head_count(text_width, None, text_heads, source, "CLIP text tower",
                              flag="--text-heads", head_size=OPENAI_HEAD_SIZE),
        text_mlp=int(state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        eos_token_id=vocab_size - 1,  # <|endoftext|> is the last id in OpenAI's vocab
        text_pooling="argmax",
        embed_dim=int(state_dict["text_projection"].shape[1]),
        activation=activation,
        layer_norm_eps=1e-5,
    )


def _openai_block_rules(torch_prefix: str, flax_prefix: tuple[str, ...], width: int) -> list[Rule]:
    rules = ln_rules(f"{torch_prefix}.ln_1", (*flax_prefix, "layer_norm1"))
    rules += ln_rules(f"{torch_prefix}.ln_2", (*flax_prefix, "layer_norm2"))
    # nn.MultiheadAttention packs q, k, v row-wise in one [3W, W] weight and [3W] bias.
    for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
        rows = dict(start=j * width, stop=(j + 1) * width)
        path = (*flax_prefix, "self_attn", proj)
        rules.append(Rule(f"{torch_prefix}.attn.in_proj_weight", (*path, "kernel"),
                          functools.partial(_rows, transpose=True, **rows)))
        rules.append(Rule(f"{torch_prefix}.attn.in_proj_bias", (*path, "bias"),
                          functools.partial(_rows, transpose=False, **rows)))
    rules += dense_rules(f"{torch_prefix}.attn.out_proj", (*flax_prefix, "self_attn", "out_proj"))
    rules += dense_rules(f"{torch_prefix}.mlp.c_fc", (*flax_prefix, "mlp", "fc1"))
    rules += dense_rules(f"{torch_prefix}.mlp.c_proj", (*flax_prefix, "mlp", "fc2"))
    return rules


def openai_clip_rules(cfg: clip_model.ClipConfig) -> list[Rule]:
    """The OpenAI ``clip`` (ViT) key table for ``cfg``."""
    v, t = ("params", "vision_model"), ("params", "text_model")
    rules = [
        Rule("visual.conv1.weight", (*v, "patch_embedding", "kernel"), conv_kernel),
        Rule("visual.class_embedding", (*v, "class_embedding")),
        Rule("visual.positional_embedding", (*v, "position_embedding")),
        *ln_rules("visual.ln_pre", (*v, "pre_layrnorm")),
        *ln_rules("visual.ln_post", (*v, "post_layernorm")),
        Rule("token_embedding.weight", (*t, "token_embedding", "embedding")),
        Rule("positional_embedding", (*t, "position_embedding")),
        *ln_rules("ln_final", (*t, "final_layer_norm")),
        # OpenAI applies these as `x @ proj` with proj [width, embed]: already a Dense kernel.
        Rule("visual.proj", ("params", "visual_projection", "kernel"), identity),
        Rule("text_projection", ("params", "text_projection", "kernel"), identity),
        Rule("logit_scale", ("params", "logit_scale")),
    ]
    for i in range(cfg.vision_layers):
        rules += _openai_block_rules(f"visual.transformer.resblocks.{i}", (*v, f"layers_{i}"),
                                     cfg.vision_width)
    for i in range(cfg.text_layers):
        rules += _openai_block_rules(f"transformer.resblocks.{i}", (*t, f"layers_{i}"),
                                     cfg.text_width)
    return rules


def convert_openai_clip(source: Source, *, activation: str = "quick_gelu",
                        num_heads: int | None = None,
                        text_heads: int | None = None) -> Converted:
    """OpenAI ``clip`` ViT state dict -> :class:`Converted` (family ``clip``).

    Args:
      source: from :func:`texter_jax.converters.state_dict.read_source` on a torch state-dict file
        (OpenAI's TorchScript archives must first be saved as a plain state dict:
        ``torch.save(torch.jit.load(p, map_location="cpu").state_dict(), out)``).
      activation: MLP activation. OpenAI models use ``"quick_gelu"``; open_clip models
        trained elsewhere in this layout often use ``"gelu"``, which the weights do not
        reveal.
      num_heads, text_heads: attention heads of the image / text tower, when the
        OpenAI rule (width // 64) does not apply.

    Raises:
      ConversionError: a ResNet tower, or keys and shapes that do not fit.
    """
    cfg = openai_clip_config(source.state_dict, activation=activation, num_heads=num_heads,
                             text_heads=text_heads, source=source.path)
    variables = apply_rules(
        source.state_dict, openai_clip_rules(cfg), expected_variables(cfg), source=source.path,
        # Scalars OpenAI's TorchScript models carry; build_model drops them too.
        ignore=("input_resolution", "context_length", "vocab_size"))
    return Converted(family=clip_model.FAMILY, config=config_to_dict(cfg),
                     variables=variables, layout=OPENAI_LAYOUT)
