"""Hugging Face ``ViTForImageClassification`` weights -> ``vit`` Flax (layout ``hf-vit``).

Both namings: on disk (``save_pretrained`` files, hub checkpoints)
``vit.encoder.layer.N.attention.attention.{query,key,value}``, ``attention.output.dense``,
``intermediate.dense``, ``output.dense``; in memory in transformers 5
(``model.state_dict()``) ``vit.layers.N.attention.{q,k,v,o}_proj``, ``mlp.fc1/fc2``.
The architecture comes from ``config.json`` (whitelisted) or, for a bare state dict,
from the tensor shapes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from texter_jax.converters.mapping import ConversionError, Converted
from texter_jax.converters.state_dict import Source
from texter_jax.converters.vit_rules import (
    TORCHVISION_HEADS,
    convert_with_rules,
    count_blocks,
    dense_rules,
    embedding_rules,
    grid_image_size,
    head_count,
    norm_rules,
    require_keys,
)
from texter_jax.models import vit as vit_model

# HF ViTImageProcessor defaults (used when the folder has no preprocessor_config.json).
_HF_DEFAULT_MEAN = (0.5, 0.5, 0.5)
_HF_DEFAULT_STD = (0.5, 0.5, 0.5)

# HF config attributes: read here, or irrelevant to inference of the classifier.
_HF_HANDLED = {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "hidden_act", "layer_norm_eps", "image_size", "patch_size", "num_channels",
               "qkv_bias", "id2label", "label2id", "num_labels", "head_dim"}
_HF_IGNORED = {
    # dropout is off at inference; init and the MIM decoder do not affect the classifier
    "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range",
    "encoder_stride", "pooler_output_size", "pooler_act",
    # bookkeeping written by PreTrainedConfig
    "architectures", "model_type", "transformers_version", "dtype", "torch_dtype",
    "_name_or_path", "_attn_implementation", "attn_implementation",
    "_attn_implementation_autoset", "problem_type", "return_dict", "output_hidden_states",
    "output_attentions", "use_bfloat16", "torchscript", "pruned_heads",  # checked below
    "tie_word_embeddings", "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder",
    "finetuning_task", "tokenizer_class", "prefix", "task_specific_params",
    "use_mask_token",
}


def _hf_pair(value, name: str, where: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ConversionError(f"{where}: non-square {name} {value} is not supported")
        value = value[0]
    return int(value)


def _hf_preprocessor(path: str) -> tuple[tuple, tuple]:
    pre = Path(path) / "preprocessor_config.json"
    if Path(path).is_dir() and pre.is_file():
        meta = json.loads(pre.read_text())
        if meta.get("do_normalize", True):
            return (tuple(meta.get("image_mean", _HF_DEFAULT_MEAN)),
                    tuple(meta.get("image_std", _HF_DEFAULT_STD)))
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return _HF_DEFAULT_MEAN, _HF_DEFAULT_STD


def _hf_config(source: Source, sd: dict[str, np.ndarray], layer_fmt: str,
               num_heads: int | None, layer_norm_eps: float | None) -> vit_model.ViTConfig:
    where = source.path
    require_keys(sd, ["vit.embeddings.patch_embeddings.projection.weight",
                      "vit.embeddings.position_embeddings", "classifier.weight"],
                 where, "hf-vit")
    width, channels, patch, _ = sd["vit.embeddings.patch_embeddings.projection.weight"].shape
    depth = count_blocks(sd, re.escape(layer_fmt.format("@")).replace("@", r"(\d+)"))
    mean, std = _hf_preprocessor(where)
    hc = dict(source.hf_config or {})
    if hc:
        unknown = sorted(set(hc) - _HF_HANDLED - _HF_IGNORED)
        if unknown:
            raise ConversionError(
                f"{where}: unsupported HF ViT config attributes {unknown}; the converter "
                "only knows the standard ViTForImageClassification architecture")
        if hc.get("model_type", "vit") != "vit":
            raise ConversionError(f"{where}: model_type {hc['model_type']!r} is not 'vit'")
        if hc.get("hidden_act", "gelu") != "gelu":
            raise ConversionError(
                f"{where}: hidden_act {hc['hidden_act']!r} is not supported (only exact 'gelu')")
        if hc.get("pruned_heads"):
            raise ConversionError(f"{where}: pruned attention heads are not supported")
        if int(hc.get("num_channels", 3)) != 3:
            raise ConversionError(f"{where}: num_channels {hc['num_channels']} != 3")
        heads = int(hc.get("num_attention_heads", 12))
        if hc.get("head_dim") not in (None, int(hc.get("hidden_size", 768)) // heads):
            raise ConversionError(f"{where}: head_dim {hc['head_dim']} != hidden_size/heads")
        cfg_image = _hf_pair(hc.get("image_size", 224), "image_size", where)
        cfg_patch = _hf_pair(hc.get("patch_size", 16), "patch_size", where)
        if cfg_patch != patch:
            raise ConversionError(f"{where}: config patch_size {cfg_patch} but weights {patch}")
        eps = float(hc.get("layer_norm_eps", 1e-12))
        qkv_bias = bool(hc.get("qkv_bias", True))
    else:
        # A bare torch.save(model.state_dict()): read what the weights tell.
        heads = head_count(width, TORCHVISION_HEADS, num_heads, where, "HF ViT")
        cfg_image = None
        eps = 1e-12 if layer_norm_eps is None else float(layer_norm_eps)  # HF default
        qkv_bias = any(k.endswith(("query.bias", "q_proj.bias")) for k in sd)
    if hc and num_heads is not None and int(num_heads) != heads:
        raise ConversionError(f"{where}: num_heads={num_heads} contradicts config ({heads})")
    if channels != 3:
        raise ConversionError(f"{where}: patch projection takes {channels} channels, not 3")
    image = grid_image_size(sd["vit.embeddings.position_embeddings"].shape, patch, where)
    if cfg_image is not None and cfg_image != image:
        raise ConversionError(
            f"{where}: config image_size {cfg_image} but position embeddings fit {image}")
    fc1 = layer_fmt.format(0) + ("intermediate.dense.weight" if "encoder.layer" in layer_fmt
                                 else "mlp.fc1.weight")
    require_keys(sd, [fc1], where, "hf-vit")
    return vit_model.ViTConfig(
        image_size=image, patch_size=patch, hidden_size=width, depth=depth, num_heads=heads,
        mlp_dim=sd[fc1].shape[0], num_classes=sd["classifier.weight"].shape[0],
        layer_norm_eps=eps, qkv_bias=qkv_bias, mean=mean, std=std)


def convert_hf_vit(source: Source, *, num_heads: int | None = None,
                   layer_norm_eps: float | None = None) -> Converted:
    """HF ``ViTForImageClassification`` weights (either naming) -> ``vit`` family.

    The architecture comes from ``source.hf_config`` (``config.json`` of a model
    folder); unknown config attributes and unsupported values raise. Without a config
    (a bare state-dict file) it is read from the weights, and ``num_heads`` is needed
    for non-standard widths; ``layer_norm_eps`` then defaults to HF's 1e-12.
    Normalisation constants come from the folder's ``preprocessor_config.json``, or
    the ViTImageProcessor defaults (0.5, 0.5).
    """
    sd = source.state_dict
    where = source.path
    if not any(k.startswith("vit.") for k in sd):
        raise ConversionError(
            f"{where}: no 'vit.' keys; a bare ViTModel has no classifier head "
            "(TEXTER needs ViTForImageClassification weights)")
    old = any(k.startswith("vit.encoder.layer.") for k in sd)
    layer_fmt = "vit.encoder.layer.{}." if old else "vit.layers.{}."
    cfg = _hf_config(source, sd, layer_fmt, num_heads, layer_norm_eps)
    rules = embedding_rules("vit.embeddings.patch_embeddings.projection",
                            "vit.embeddings.cls_token", "vit.embeddings.position_embeddings")
    for i in range(cfg.depth):
        t, b = layer_fmt.format(i).rstrip("."), f"blocks_{i}"
        rules += norm_rules(f"{t}.layernorm_before", (b, "ln1"))
        rules += norm_rules(f"{t}.layernorm_after", (b, "ln2"))
        if old:
            names = {"query": "attention.attention.query", "key": "attention.attention.key",
                     "value": "attention.attention.value", "out": "attention.output.dense",
                     "fc1": "intermediate.dense", "fc2": "output.dense"}
        else:
            names = {"query": "attention.q_proj", "key": "attention.k_proj",
                     "value": "attention.v_proj", "out": "attention.o_proj",
                     "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
        for flax_name in ("query", "key", "value"):
            rules += dense_rules(f"{t}.{names[flax_name]}", (b, "attn", flax_name), cfg.qkv_bias)
        rules += dense_rules(f"{t}.{names['out']}", (b, "attn", "out"))
        rules += dense_rules(f"{t}.{names['fc1']}", (b, "mlp", "fc1"))
        rules += dense_rules(f"{t}.{names['fc2']}", (b, "mlp", "fc2"))
    rules += norm_rules("vit.layernorm", ("norm",))
    rules += dense_rules("classifier", ("classifier",))
    # ViTForImageClassification builds no pooler (add_pooling_layer=False) and HF
    # itself drops pooler weights found in a checkpoint: so do we.
    return convert_with_rules(vit_model.FAMILY, "hf-vit", cfg, vit_model.build, sd, rules, where,
                              ignore_prefixes=("vit.pooler.",))
