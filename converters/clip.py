"""CLIP (ViT) checkpoints -> texter_jax ``clip`` variables.

Two source layouts:

* ``"hf-clip"``: a Hugging Face ``CLIPModel`` (``text_model.*``, ``vision_model.*``,
  ``visual_projection.weight``, ``text_projection.weight``, ``logit_scale``) with its
  ``config.json``; see :func:`convert_hf_clip`.
* ``"openai-clip"``: an OpenAI ``clip`` state dict (``visual.conv1.weight``,
  ``visual.transformer.resblocks.N.attn.in_proj_weight``, ``token_embedding.weight``,
  ``ln_final``, ``text_projection`` ...); the architecture is read off the tensor shapes
  as OpenAI's ``build_model`` does; see :func:`convert_openai_clip`.

Only ViT image towers are supported; OpenAI's ModifiedResNet towers (RN50, RN101,
RN50x4, RN50x16, RN50x64) are refused with a clear error.

The tokenizer files of an HF folder are not weights: :func:`tokenizer_files` lists them
and :func:`copy_tokenizer_files` puts them next to the converted model, where
``texter_jax.text.ClipTokenizer.from_dir`` finds them.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from converters.mapping import (ConversionError, Converted, Rule, apply_rules,
                                conv_kernel, identity, linear_kernel)
from converters.state_dict import Source
from texter_jax.models import clip as clip_model
from texter_jax.models.registry import abstract_variables, config_to_dict

HF_LAYOUT = "hf-clip"
OPENAI_LAYOUT = "openai-clip"

# Tokenizer files of an HF CLIP folder, copied verbatim next to a converted model.
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")

# HF text tower's legacy `eos_token_id` (before transformers PR #24773): it selects the
# argmax-of-ids pooling, which HF keeps for such configs (and so must we).
_LEGACY_EOS_TOKEN_ID = 2

# --- config.json whitelist ------------------------------------------------------------
_HANDLED_TOP = {"text_config", "vision_config", "projection_dim", "model_type",
                "text_config_dict", "vision_config_dict"}
_HANDLED_TEXT = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "max_position_embeddings", "hidden_act",
                 "layer_norm_eps", "eos_token_id", "model_type"}
_HANDLED_VISION = {"hidden_size", "intermediate_size", "num_hidden_layers",
                   "num_attention_heads", "image_size", "patch_size", "num_channels",
                   "hidden_act", "layer_norm_eps", "model_type"}
# Attributes that cannot change an inference forward pass: bookkeeping, initialisation,
# dropout (inference), token ids other than EOS, the towers' own projection_dim (only
# CLIP{Text,Vision}ModelWithProjection reads it; CLIPModel uses the top-level one), and
# the generation/legacy fields transformers 4.x wrote into every config.json.
_IGNORED = {
    "architectures", "dtype", "torch_dtype", "transformers_version", "_commit_hash",
    "_name_or_path", "name_or_path", "initializer_factor", "initializer_range",
    "logit_scale_init_value", "attention_dropout", "dropout", "projection_dim",
    "pad_token_id", "bos_token_id", "sep_token_id", "decoder_start_token_id",
    "output_attentions", "output_hidden_states", "return_dict", "use_return_dict",
    "torchscript", "use_bfloat16", "tf_legacy_loss", "pruned_heads", "chunk_size_feed_forward",
    "is_encoder_decoder", "is_decoder", "add_cross_attention", "cross_attention_hidden_size",
    "tie_encoder_decoder", "tie_word_embeddings", "id2label", "label2id", "num_labels",
    "problem_type", "finetuning_task", "tokenizer_class", "prefix", "task_specific_params",
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams",
    "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens", "_attn_implementation",
    "attn_implementation", "_attn_implementation_autoset", "gradient_checkpointing",
    "use_cache",
}

# OpenAI ViT CLIP models the OpenAI layout path reproduces (any ViT shape is read off
# the tensors; these are the released ones).
OPENAI_VIT_MODELS = ("ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px")
OPENAI_RESNET_MODELS = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64")


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


# --- shared helpers ---------------------------------------------------------------------

def _expected(cfg: clip_model.ClipConfig):
    return abstract_variables(clip_model.build(clip_model.FAMILY, config_to_dict(cfg)))


def _ln(torch_prefix: str, flax_path: tuple[str, ...]) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", (*flax_path, "scale")),
            Rule(f"{torch_prefix}.bias", (*flax_path, "bias"))]


def _dense(torch_prefix: str, flax_path: tuple[str, ...]) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", (*flax_path, "kernel"), linear_kernel),
            Rule(f"{torch_prefix}.bias", (*flax_path, "bias"))]


def _rows(w: np.ndarray, *, start: int, stop: int, transpose: bool) -> np.ndarray:
    part = w[start:stop]
    return np.ascontiguousarray(part.T) if transpose else part


def _make_config(**fields: Any) -> clip_model.ClipConfig:
    try:
        return clip_model.ClipConfig(**fields)
    except ValueError as e:
        raise ConversionError(f"unsupported CLIP architecture: {e}") from e


# --- Hugging Face CLIPModel --------------------------------------------------------------

def _check_attributes(section: str, cfg: dict[str, Any], handled: set[str]) -> None:
    unknown = sorted(k for k in cfg if k not in handled and k not in _IGNORED)
    if unknown:
        raise ConversionError(
            f"HF CLIP config {section} has attributes texter_jax does not handle: "
            f"{', '.join(unknown)}. The converted model could differ from the original; "
            f"handled: {', '.join(sorted(handled))}")


def _square(value: Any, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ConversionError(f"HF CLIP vision {name} {value} is not square")
        value = value[0]
    return int(value)


def hf_clip_config(hf_config: dict[str, Any]) -> clip_model.ClipConfig:
    """HF ``CLIPConfig`` dict (``config.json``) -> :class:`ClipConfig`, whitelisted.

    Raises:
      ConversionError: another model type, an attribute we do not reproduce, or an
        architecture the Flax module cannot express.
    """
    model_type = hf_config.get("model_type", "clip")
    if model_type != "clip":
        raise ConversionError(
            f"config.json has model_type {model_type!r}; convert_hf_clip handles full "
            "CLIPModel checkpoints (model_type 'clip') only")
    _check_attributes("(top level)", hf_config, _HANDLED_TOP)
    # Legacy `*_config_dict` entries override `*_config`, as CLIPConfig does.
    text = {**(hf_config.get("text_config") or {}), **(hf_config.get("text_config_dict") or {})}
    vision = {**(hf_config.get("vision_config") or {}),
              **(hf_config.get("vision_config_dict") or {})}
    _check_attributes("text_config", text, _HANDLED_TEXT)
    _check_attributes("vision_config", vision, _HANDLED_VISION)
    for section, sub, want in (("text_config", text, "clip_text_model"),
                               ("vision_config", vision, "clip_vision_model")):
        if sub.get("model_type", want) != want:
            raise ConversionError(f"HF CLIP {section} has model_type {sub['model_type']!r}, "
                                  f"expected {want!r}")

    # Fields HF leaves out of config.json take CLIPTextConfig / CLIPVisionConfig defaults.
    t = lambda k, d: text.get(k, d)
    v = lambda k, d: vision.get(k, d)
    if v("num_channels", 3) != 3:
        raise ConversionError(f"HF CLIP with {v('num_channels', 3)} input channels; only RGB (3)")
    acts = {t("hidden_act", "quick_gelu"), v("hidden_act", "quick_gelu")}
    if len(acts) != 1:
        raise ConversionError(f"HF CLIP towers use different activations {sorted(acts)}; "
                              "texter_jax's CLIP uses one for both")
    epss = {float(t("layer_norm_eps", 1e-5)), float(v("layer_norm_eps", 1e-5))}
    if len(epss) != 1:
        raise ConversionError(f"HF CLIP towers use different layer_norm_eps {sorted(epss)}")
    eos = t("eos_token_id", 49407)
    if not isinstance(eos, int):
        raise ConversionError(f"HF CLIP text eos_token_id {eos!r} is not a single integer")
    vocab_size = int(t("vocab_size", 49408))
    if eos == _LEGACY_EOS_TOKEN_ID:
        # HF pools at argmax(ids) then: the real EOT is the largest id (vocab_size - 1).
        pooling, eos = "argmax", vocab_size - 1
    else:
        pooling = "eos"
    return _make_config(
        image_size=_square(v("image_size", 224), "image_size"),
        patch_size=_square(v("patch_size", 32), "patch_size"),
        vision_width=int(v("hidden_size", 768)),
        vision_layers=int(v("num_hidden_layers", 12)),
        vision_heads=int(v("num_attention_heads", 12)),
        vision_mlp=int(v("intermediate_size", 3072)),
        vocab_size=vocab_size,
        context_length=int(t("max_position_embeddings", 77)),
        text_width=int(t("hidden_size", 512)),
        text_layers=int(t("num_hidden_layers", 12)),
        text_heads=int(t("num_attention_heads", 8)),
        text_mlp=int(t("intermediate_size", 2048)),
        eos_token_id=int(eos),
        text_pooling=pooling,
        embed_dim=int(hf_config.get("projection_dim", 512)),
        activation=acts.pop(),
        layer_norm_eps=epss.pop(),
    )


def _hf_block_rules(torch_prefix: str, flax_prefix: tuple[str, ...]) -> list[Rule]:
    rules = _ln(f"{torch_prefix}.layer_norm1", (*flax_prefix, "layer_norm1"))
    rules += _ln(f"{torch_prefix}.layer_norm2", (*flax_prefix, "layer_norm2"))
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        rules += _dense(f"{torch_prefix}.self_attn.{proj}", (*flax_prefix, "self_attn", proj))
    for fc in ("fc1", "fc2"):
        rules += _dense(f"{torch_prefix}.mlp.{fc}", (*flax_prefix, "mlp", fc))
    return rules


def hf_clip_rules(cfg: clip_model.ClipConfig) -> list[Rule]:
    """The HF ``CLIPModel`` key table for ``cfg``."""
    v, t = ("params", "vision_model"), ("params", "text_model")
    rules = [
        Rule("vision_model.embeddings.patch_embedding.weight", (*v, "patch_embedding", "kernel"),
             conv_kernel),
        Rule("vision_model.embeddings.class_embedding", (*v, "class_embedding")),
        Rule("vision_model.embeddings.position_embedding.weight", (*v, "position_embedding")),
        *_ln("vision_model.pre_layrnorm", (*v, "pre_layrnorm")),
        *_ln("vision_model.post_layernorm", (*v, "post_layernorm")),
        Rule("text_model.embeddings.token_embedding.weight", (*t, "token_embedding", "embedding")),
        Rule("text_model.embeddings.position_embedding.weight", (*t, "position_embedding")),
        *_ln("text_model.final_layer_norm", (*t, "final_layer_norm")),
        Rule("visual_projection.weight", ("params", "visual_projection", "kernel"), linear_kernel),
        Rule("text_projection.weight", ("params", "text_projection", "kernel"), linear_kernel),
        Rule("logit_scale", ("params", "logit_scale")),
    ]
    for i in range(cfg.vision_layers):
        rules += _hf_block_rules(f"vision_model.encoder.layers.{i}", (*v, f"layers_{i}"))
    for i in range(cfg.text_layers):
        rules += _hf_block_rules(f"text_model.encoder.layers.{i}", (*t, f"layers_{i}"))
    return rules


def convert_hf_clip(source: Source) -> Converted:
    """HF ``CLIPModel`` weights + ``config.json`` -> :class:`Converted` (family ``clip``).

    Args:
      source: from :func:`converters.state_dict.read_source` on an HF folder (or cached
        id); ``source.hf_config`` must be the folder's ``config.json``.

    Raises:
      ConversionError: no/unsupported config, or keys and shapes that do not fit it.
    """
    if source.hf_config is None:
        raise ConversionError(
            f"{source.path}: HF CLIP weights need their config.json (head counts and the "
            "text pooling cannot be read off the tensors); pass the HF model folder")
    cfg = hf_clip_config(source.hf_config)
    variables = apply_rules(
        source.state_dict, hf_clip_rules(cfg), _expected(cfg), source=source.path,
        # Older checkpoints saved the (constant) position_ids buffers.
        ignore=("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"))
    return Converted(family=clip_model.FAMILY, config=config_to_dict(cfg),
                     variables=variables, layout=HF_LAYOUT)


# --- OpenAI clip ---------------------------------------------------------------------------

def _count_blocks(keys: Iterable[str], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in keys if k.startswith(prefix)})


def openai_clip_config(state_dict: dict[str, np.ndarray], *,
                       activation: str = "quick_gelu") -> clip_model.ClipConfig:
    """Architecture of an OpenAI-layout ViT CLIP read off its tensor shapes.

    Mirrors OpenAI's ``build_model``: head counts are width // 64 (their convention, not
    stored in the file), LayerNorm eps 1e-5, text pooled at the largest token id.

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
        raise ConversionError(f"OpenAI CLIP state dict lacks {', '.join(missing)}")
    conv = state_dict["visual.conv1.weight"]  # [width, 3, p, p]
    vision_width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = int(state_dict["ln_final.weight"].shape[0])
    vocab_size = int(state_dict["token_embedding.weight"].shape[0])
    # OpenAI has no head counts in the file: build_model fixes the head size at 64.
    return _make_config(
        image_size=patch * grid,
        patch_size=patch,
        vision_width=vision_width,
        vision_layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
        vision_heads=vision_width // 64,
        vision_mlp=int(state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        vocab_size=vocab_size,
        context_length=int(state_dict["positional_embedding"].shape[0]),
        text_width=text_width,
        text_layers=_count_blocks(state_dict, "transformer.resblocks."),
        text_heads=text_width // 64,
        text_mlp=int(state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        eos_token_id=vocab_size - 1,  # <|endoftext|> is the last id in OpenAI's vocab
        text_pooling="argmax",
        embed_dim=int(state_dict["text_projection"].shape[1]),
        activation=activation,
        layer_norm_eps=1e-5,
    )


def _openai_block_rules(torch_prefix: str, flax_prefix: tuple[str, ...], width: int) -> list[Rule]:
    rules = _ln(f"{torch_prefix}.ln_1", (*flax_prefix, "layer_norm1"))
    rules += _ln(f"{torch_prefix}.ln_2", (*flax_prefix, "layer_norm2"))
    # nn.MultiheadAttention packs q, k, v row-wise in one [3W, W] weight and [3W] bias.
    for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
        rows = dict(start=j * width, stop=(j + 1) * width)
        path = (*flax_prefix, "self_attn", proj)
        rules.append(Rule(f"{torch_prefix}.attn.in_proj_weight", (*path, "kernel"),
                          functools.partial(_rows, transpose=True, **rows)))
        rules.append(Rule(f"{torch_prefix}.attn.in_proj_bias", (*path, "bias"),
                          functools.partial(_rows, transpose=False, **rows)))
    rules += _dense(f"{torch_prefix}.attn.out_proj", (*flax_prefix, "self_attn", "out_proj"))
    rules += _dense(f"{torch_prefix}.mlp.c_fc", (*flax_prefix, "mlp", "fc1"))
    rules += _dense(f"{torch_prefix}.mlp.c_proj", (*flax_prefix, "mlp", "fc2"))
    return rules


def openai_clip_rules(cfg: clip_model.ClipConfig) -> list[Rule]:
    """The OpenAI ``clip`` (ViT) key table for ``cfg``."""
    v, t = ("params", "vision_model"), ("params", "text_model")
    rules = [
        Rule("visual.conv1.weight", (*v, "patch_embedding", "kernel"), conv_kernel),
        Rule("visual.class_embedding", (*v, "class_embedding")),
        Rule("visual.positional_embedding", (*v, "position_embedding")),
        *_ln("visual.ln_pre", (*v, "pre_layrnorm")),
        *_ln("visual.ln_post", (*v, "post_layernorm")),
        Rule("token_embedding.weight", (*t, "token_embedding", "embedding")),
        Rule("positional_embedding", (*t, "position_embedding")),
        *_ln("ln_final", (*t, "final_layer_norm")),
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


def convert_openai_clip(source: Source, *, activation: str = "quick_gelu") -> Converted:
    """OpenAI ``clip`` ViT state dict -> :class:`Converted` (family ``clip``).

    Args:
      source: from :func:`converters.state_dict.read_source` on a torch state-dict file
        (OpenAI's TorchScript archives must first be saved as a plain state dict:
        ``torch.save(torch.jit.load(p, map_location="cpu").state_dict(), out)``).
      activation: MLP activation. OpenAI models use ``"quick_gelu"``; open_clip models
        trained elsewhere in this layout often use ``"gelu"``, which the weights do not
        reveal.

    Raises:
      ConversionError: a ResNet tower, or keys and shapes that do not fit.
    """
    cfg = openai_clip_config(source.state_dict, activation=activation)
    variables = apply_rules(
        source.state_dict, openai_clip_rules(cfg), _expected(cfg), source=source.path,
        # Scalars OpenAI's TorchScript models carry; build_model drops them too.
        ignore=("input_resolution", "context_length", "vocab_size"))
    return Converted(family=clip_model.FAMILY, config=config_to_dict(cfg),
                     variables=variables, layout=OPENAI_LAYOUT)


def convert(source: Source) -> Converted:
    """Converts either layout, chosen by :func:`detect_layout`."""
    layout = detect_layout(source.state_dict)
    if layout == HF_LAYOUT:
        return convert_hf_clip(source)
    if layout == OPENAI_LAYOUT:
        return convert_openai_clip(source)
    raise ConversionError(f"{source.path}: not a CLIP checkpoint (neither HF CLIPModel nor "
                          "OpenAI clip keys)")


# --- tokenizer files -----------------------------------------------------------------------

def tokenizer_files(source_dir: str | os.PathLike) -> list[Path]:
    """The HF tokenizer files present in ``source_dir`` (see :data:`TOKENIZER_FILES`).

    Returns an empty list for a file source or a folder without them.
    """
    folder = Path(source_dir)
    if not folder.is_dir():
        return []
    return [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]


def copy_tokenizer_files(source_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Copies :func:`tokenizer_files` of ``source_dir`` into ``out_dir``; returns the copies."""
    out_dir = Path(out_dir)
    copied = []
    for path in tokenizer_files(source_dir):
        copied.append(Path(shutil.copy2(path, out_dir / path.name)))
    return copied
