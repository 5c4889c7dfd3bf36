"""CLIP (ViT) checkpoints -> texter_jax ``clip`` variables.

The entry point of the CLIP converters: :func:`detect_layout` and :func:`convert` pick
the source layout; each layout's converter lives in its own module and is re-exported
here:

* ``"hf-clip"``: a Hugging Face ``CLIPModel`` (``text_model.*``, ``vision_model.*``,
  ``visual_projection.weight``, ``text_projection.weight``, ``logit_scale``) with its
  ``config.json``; see :func:`convert_hf_clip` (:mod:`texter_jax.converters.clip_hf`).
* ``"openai-clip"``: an OpenAI ``clip`` state dict (``visual.conv1.weight``,
  ``visual.transformer.resblocks.N.attn.in_proj_weight``, ``token_embedding.weight``,
  ``ln_final``, ``text_projection`` ...); the architecture is read off the tensor shapes
  as OpenAI's ``build_model`` does; see :func:`convert_openai_clip`
  (:mod:`texter_jax.converters.clip_openai`).

Only ViT image towers are supported; OpenAI's ModifiedResNet towers (RN50, RN101,
RN50x4, RN50x16, RN50x64) are refused with a clear error.

The tokenizer files of an HF folder are not weights: :func:`tokenizer_files` lists them
and :func:`copy_tokenizer_files` puts them next to the converted model, where
``texter_jax.text.ClipTokenizer.from_dir`` finds them
(:mod:`texter_jax.converters.clip_tokenizer_files`).
"""

from __future__ import annotations

from collections.abc import Iterable

from texter_jax.converters.clip_hf import HF_LAYOUT, convert_hf_clip, hf_clip_config, hf_clip_rules
from texter_jax.converters.clip_openai import (
    OPENAI_LAYOUT,
    OPENAI_RESNET_MODELS,
    OPENAI_VIT_MODELS,
    convert_openai_clip,
    openai_clip_config,
    openai_clip_rules,
)
from texter_jax.converters.clip_tokenizer_files import (
    TOKENIZER_FILES,
    copy_tokenizer_files,
    tokenizer_files,
)
from texter_jax.converters.mapping import ConversionError, Converted
from texter_jax.converters.state_dict import Source

__all__ = [
    "HF_LAYOUT", "OPENAI_LAYOUT", "OPENAI_RESNET_MODELS", "OPENAI_VIT_MODELS", "TOKENIZER_FILES",
    "convert", "convert_hf_clip", "convert_openai_clip", "copy_tokenizer_files",
    "detect_layout", "hf_clip_config", "hf_clip_rules", "openai_clip_config",
    "openai_clip_rules", "tokenizer_files",
]


def detect_layout(keys: Iterable[str]) -> str | None:
    """``"hf-clip"``, ``"openai-clip"`` or None, from the state-dict keys alone.

    OpenAI ResNet-tower checkpoints are reported as ``"openai-clip"`` too, so that
    :func:`convert_openai_clip` can refuse them with a precise message.
    """
    keys = set(keys)
    if {"text_model.embeddings.token_embedding.weight",
            "vision_model.embeddings.patch_embedding.weight"} <= keys:
        return HF_LAYOUT
    if {"token_embedding.weight", "ln_final.weight", "visual.conv1.weight"} <= keys:
        return OPENAI_LAYOUT
    return None


def convert(source: Source) -> Converted:
    """Converts either layout, chosen by :func:`detect_layout`."""
    layout = detect_layout(source.state_dict)
    if layout == HF_LAYOUT:
        return convert_hf_clip(source)
    if layout == OPENAI_LAYOUT:
        return convert_openai_clip(source)
    raise ConversionError(f"{source.path}: not a CLIP checkpoint (neither HF CLIPModel nor "
                          "OpenAI clip keys)")
