"""Hugging Face ``CLIPModel`` weights + ``config.json`` -> texter_jax ``clip`` (layout ``hf-clip``).

Keys ``text_model.*``, ``vision_model.*``, ``visual_projection.weight``,
``text_projection.weight``, ``logit_scale``. The architecture comes from the folder's
``config.json``, whose attributes are whitelisted: one texter_jax does not reproduce
raises instead of converting into a model that could differ.
"""

from __future__ import annotations

from typing import Any

from texter_jax.converters.clip_rules import dense_rules, expected_variables, ln_rules, make_config
from texter_jax.converters.mapping import (
    ConversionError,
    Converted,
    Rule,
    apply_rules,
    conv_kernel,
    linear_kernel,
)
from texter_jax.converters.state_dict import Source
from texter_jax.models import clip as clip_model
from texter_jax.models.registry import config_to_dict

HF_LAYOUT = "hf-clip"

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
    def t(k, d):
        return text.get(k, d)
    def v(k, d):
        return vision.get(k, d)
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
    return make_config(
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
    rules = ln_rules(f"{torch_prefix}.layer_norm1", (*flax_prefix, "layer_norm1"))
    rules += ln_rules(f"{torch_prefix}.layer_norm2", (*flax_prefix, "layer_norm2"))
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        rules += dense_rules(f"{torch_prefix}.self_attn.{proj}", (*flax_prefix, "self_attn", proj))
    for fc in ("fc1", "fc2"):
        rules += dense_rules(f"{torch_prefix}.mlp.{fc}", (*flax_prefix, "mlp", fc))
    return rules


def hf_clip_rules(cfg: clip_model.ClipConfig) -> list[Rule]:
    """The HF ``CLIPModel`` key table for ``cfg``."""
    v, t = ("params", "vision_model"), ("params", "text_model")
    rules = [
        Rule("vision_model.embeddings.patch_embedding.weight", (*v, "patch_embedding", "kernel"),
             conv_kernel),
        Rule("vision_model.embeddings.class_embedding", (*v, "class_embedding")),
        Rule("vision_model.embeddings.position_embedding.weight", (*v, "position_embedding")),
        *ln_rules("vision_model.pre_layrnorm", (*v, "pre_layrnorm")),
        *ln_rules("vision_model.post_layernorm", (*v, "post_layernorm")),
        Rule("text_model.embeddings.token_embedding.weight", (*t, "token_embedding", "embedding")),
        Rule("text_model.embeddings.position_embedding.weight", (*t, "position_embedding")),
        *ln_rules("text_model.final_layer_norm", (*t, "final_layer_norm")),
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
      source: from :func:`texter_jax.converters.state_dict.read_source` on an HF folder (or cached
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
        source.state_dict, hf_clip_rules(cfg), expected_variables(cfg), source=source.path,
        # Older checkpoints saved the (constant) position_ids buffers.
        ignore=("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"))
    return Converted(family=clip_model.FAMILY, config=config_to_dict(cfg),
                     variables=variables, layout=HF_LAYOUT)
