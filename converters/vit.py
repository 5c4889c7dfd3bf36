"""torchvision / Hugging Face / DINO ViT checkpoints -> ``vit`` and ``dino_vit`` Flax.

Layouts (torch key -> Flax path tables below; ``detect_layout`` tells them apart):

* ``torchvision-vit``: ``torchvision.models.VisionTransformer`` state dicts
  (``conv_proj``, ``class_token``, ``encoder.pos_embedding``,
  ``encoder.layers.encoder_layer_N.{ln_1, self_attention.{in_proj_*, out_proj}, ln_2,
  mlp.0, mlp.3}``, ``encoder.ln``, ``heads.head``).
* ``hf-vit``: ``ViTForImageClassification``, both namings: on disk
  (``save_pretrained`` files, hub checkpoints) ``vit.encoder.layer.N.attention.attention
  .{query,key,value}``, ``attention.output.dense``, ``intermediate.dense``,
  ``output.dense``; in memory in transformers 5 (``model.state_dict()``)
  ``vit.layers.N.attention.{q,k,v,o}_proj``, ``mlp.fc1/fc2``.
* ``dino-vit``: facebookresearch/dino backbones (``cls_token``, ``pos_embed``,
  ``patch_embed.proj``, ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
  mlp.fc2}``, ``norm``) plus the separately trained ``eval_linear`` head
  (``linear.weight/bias``, often ``module.``-prefixed inside ``{"state_dict": ...}``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Callable

import numpy as np

from converters.mapping import (ConversionError, Converted, Rule, apply_rules, conv_kernel,
                                linear_kernel)
from converters.state_dict import Source
from texter_jax.models import dino as dino_model
from texter_jax.models import vit as vit_model
from texter_jax.models.registry import abstract_variables, config_to_dict

# Heads of the published models, keyed by width; the head count is not in the weights.
_TORCHVISION_HEADS = {768: 12, 1024: 16, 1280: 16}  # vit_b, vit_l, vit_h
_DINO_HEADS = {192: 3, 384: 6, 768: 12}  # vit_tiny, vit_small, vit_base
# HF ViTImageProcessor defaults (used when the folder has no preprocessor_config.json).
_HF_DEFAULT_MEAN = (0.5, 0.5, 0.5)
_HF_DEFAULT_STD = (0.5, 0.5, 0.5)


# --------------------------------------------------------------------------- helpers

def _rows(i: int, n: int) -> Callable[[np.ndarray], np.ndarray]:
    """Slice ``i`` of ``n`` equal row blocks (packed q|k|v), as Flax Dense param."""
    def f(w: np.ndarray) -> np.ndarray:
        part = np.split(w, n, axis=0)[i]
        return linear_kernel(part) if part.ndim == 2 else part
    return f


def _dense(torch_prefix: str, flax_path: tuple[str, ...], bias: bool = True) -> list[Rule]:
    rules = [Rule(f"{torch_prefix}.weight", ("params", *flax_path, "kernel"), linear_kernel)]
    if bias:
        rules.append(Rule(f"{torch_prefix}.bias", ("params", *flax_path, "bias")))
    return rules


def _norm(torch_prefix: str, flax_path: tuple[str, ...]) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", ("params", *flax_path, "scale")),
            Rule(f"{torch_prefix}.bias", ("params", *flax_path, "bias"))]


def _packed_qkv(torch_w: str, torch_b: str | None, block: str) -> list[Rule]:
    rules = []
    for i, name in enumerate(("query", "key", "value")):
        rules.append(Rule(torch_w, ("params", block, "attn", name, "kernel"), _rows(i, 3)))
        if torch_b is not None:
            rules.append(Rule(torch_b, ("params", block, "attn", name, "bias"), _rows(i, 3)))
    return rules


def _embedding_rules(conv: str, cls: str, pos: str) -> list[Rule]:
    return [Rule(f"{conv}.weight", ("params", "patch_embed", "kernel"), conv_kernel),
            Rule(f"{conv}.bias", ("params", "patch_embed", "bias")),
            Rule(cls, ("params", "cls_token")),
            Rule(pos, ("params", "pos_embed"))]


def _require(sd: dict[str, np.ndarray], keys: list[str], source: str, layout: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise ConversionError(
            f"cannot convert {source} as {layout}: missing keys needed to infer the "
            f"architecture: {', '.join(missing)}")


def _count_blocks(sd: dict[str, np.ndarray], pattern: str) -> int:
    rx = re.compile(pattern)
    ids = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    if not ids:
        return 0
    return max(ids) + 1


def _image_size(pos_shape: tuple[int, ...], patch: int, source: str) -> int:
    side = math.isqrt(pos_shape[1] - 1)
    if side * side != pos_shape[1] - 1:
        raise ConversionError(
            f"{source}: position embeddings {pos_shape} do not form a square grid "
            "(non-square inputs are not supported)")
    return side * patch


def _heads(width: int, table: dict[int, int], given: int | None, source: str,
           what: str) -> int:
    if given is not None:
        return int(given)
    if width in table:
        return table[width]
    raise ConversionError(
        f"{source}: the number of attention heads of a {what} with width {width} cannot be "
        f"read from the weights and is not a published size ({sorted(table)}); pass "
        "num_heads explicitly")


def _check_num_classes(found: int, wanted: int | None, source: str) -> None:
    if wanted is not None and int(wanted) != found:
        raise ConversionError(
            f"{source}: the checkpoint's head has {found} classes, not the {wanted} asked for")


def _strip(sd: dict[str, np.ndarray], prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Removes leading wrapper prefixes (DDP ``module.``, DINO ``backbone.``)."""
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def _convert(family: str, layout: str, cfg, module_build, sd, rules, source: str,
             **kw) -> Converted:
    model = module_build(family, config_to_dict(cfg))
    variables = apply_rules(sd, rules, abstract_variables(model), source=source, **kw)
    return Converted(family=family, config=config_to_dict(cfg), variables=variables,
                     layout=layout)


# ---------------------------------------------------------------------- detection

def detect_layout(keys) -> str | None:
    """``"torchvision-vit"``, ``"hf-vit"``, ``"dino-vit"`` or None for other keys."""
    keys = set(keys)
    if "conv_proj.weight" in keys and "encoder.pos_embedding" in keys:
        return "torchvision-vit"
    if "vit.embeddings.patch_embeddings.projection.weight" in keys:
        return "hf-vit"
    stripped = set(_strip(dict.fromkeys(keys), ("module.", "backbone.")))
    if {"cls_token", "pos_embed", "patch_embed.proj.weight"} <= stripped:
        return "dino-vit"
    return None


# -------------------------------------------------------------------- torchvision

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
      source: weights read by :func:`converters.state_dict.read_source`.
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
    _require(sd, ["conv_proj.weight", "encoder.pos_embedding", "heads.head.weight",
                  "encoder.layers.encoder_layer_0.mlp.0.weight"], where, "torchvision-vit")
    width, _, patch, _ = sd["conv_proj.weight"].shape
    depth = _count_blocks(sd, r"encoder\.layers\.encoder_layer_(\d+)\.")
    classes = sd["heads.head.weight"].shape[0]
    _check_num_classes(classes, num_classes, where)
    cfg = vit_model.ViTConfig(
        image_size=_image_size(sd["encoder.pos_embedding"].shape, patch, where),
        patch_size=patch, hidden_size=width, depth=depth,
        num_heads=_heads(width, _TORCHVISION_HEADS, num_heads, where, "torchvision ViT"),
        mlp_dim=sd["encoder.layers.encoder_layer_0.mlp.0.weight"].shape[0],
        num_classes=classes, layer_norm_eps=1e-6)  # torchvision hard-codes eps 1e-6
    rules = _embedding_rules("conv_proj", "class_token", "encoder.pos_embedding")
    for i in range(depth):
        t, b = f"encoder.layers.encoder_layer_{i}", f"blocks_{i}"
        rules += _norm(f"{t}.ln_1", (b, "ln1"))
        rules += _packed_qkv(f"{t}.self_attention.in_proj_weight",
                             f"{t}.self_attention.in_proj_bias", b)
        rules += _dense(f"{t}.self_attention.out_proj", (b, "attn", "out"))
        rules += _norm(f"{t}.ln_2", (b, "ln2"))
        rules += _dense(f"{t}.mlp.0", (b, "mlp", "fc1"))
        rules += _dense(f"{t}.mlp.3", (b, "mlp", "fc2"))
    rules += _norm("encoder.ln", ("norm",))
    rules += _dense("heads.head", ("classifier",))
    return _convert(vit_model.FAMILY, "torchvision-vit", cfg, vit_model.build, sd, rules, where)


# ----------------------------------------------------------------------------- HF

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
    _require(sd, ["vit.embeddings.patch_embeddings.projection.weight",
                  "vit.embeddings.position_embeddings", "classifier.weight"], where, "hf-vit")
    width, channels, patch, _ = sd["vit.embeddings.patch_embeddings.projection.weight"].shape
    depth = _count_blocks(sd, re.escape(layer_fmt.format("@")).replace("@", r"(\d+)"))
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
        heads = _heads(width, _TORCHVISION_HEADS, num_heads, where, "HF ViT")
        cfg_image = None
        eps = 1e-12 if layer_norm_eps is None else float(layer_norm_eps)  # HF default
        qkv_bias = any(k.endswith(("query.bias", "q_proj.bias")) for k in sd)
    if hc and num_heads is not None and int(num_heads) != heads:
        raise ConversionError(f"{where}: num_heads={num_heads} contradicts config ({heads})")
    if channels != 3:
        raise ConversionError(f"{where}: patch projection takes {channels} channels, not 3")
    image = _image_size(sd["vit.embeddings.position_embeddings"].shape, patch, where)
    if cfg_image is not None and cfg_image != image:
        raise ConversionError(
            f"{where}: config image_size {cfg_image} but position embeddings fit {image}")
    fc1 = layer_fmt.format(0) + ("intermediate.dense.weight" if "encoder.layer" in layer_fmt
                                 else "mlp.fc1.weight")
    _require(sd, [fc1], where, "hf-vit")
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
    rules = _embedding_rules("vit.embeddings.patch_embeddings.projection",
                             "vit.embeddings.cls_token", "vit.embeddings.position_embeddings")
    for i in range(cfg.depth):
        t, b = layer_fmt.format(i).rstrip("."), f"blocks_{i}"
        rules += _norm(f"{t}.layernorm_before", (b, "ln1"))
        rules += _norm(f"{t}.layernorm_after", (b, "ln2"))
        if old:
            names = {"query": "attention.attention.query", "key": "attention.attention.key",
                     "value": "attention.attention.value", "out": "attention.output.dense",
                     "fc1": "intermediate.dense", "fc2": "output.dense"}
        else:
            names = {"query": "attention.q_proj", "key": "attention.k_proj",
                     "value": "attention.v_proj", "out": "attention.o_proj",
                     "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
        for flax_name in ("query", "key", "value"):
            rules += _dense(f"{t}.{names[flax_name]}", (b, "attn", flax_name), cfg.qkv_bias)
        rules += _dense(f"{t}.{names['out']}", (b, "attn", "out"))
        rules += _dense(f"{t}.{names['fc1']}", (b, "mlp", "fc1"))
        rules += _dense(f"{t}.{names['fc2']}", (b, "mlp", "fc2"))
    rules += _norm("vit.layernorm", ("norm",))
    rules += _dense("classifier", ("classifier",))
    # ViTForImageClassification builds no pooler (add_pooling_layer=False) and HF
    # itself drops pooler weights found in a checkpoint: so do we.
    return _convert(vit_model.FAMILY, "hf-vit", cfg, vit_model.build, sd, rules, where,
                    ignore_prefixes=("vit.pooler.",))


# --------------------------------------------------------------------------- DINO

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
    sd = _strip(backbone.state_dict, ("module.", "backbone."))
    hsd = _strip(head.state_dict, ("module.",))
    _require(sd, ["patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"],
             backbone.path, "dino-vit")
    _require(hsd, ["linear.weight", "linear.bias"], head.path, "DINO linear head")
    width, _, patch, _ = sd["patch_embed.proj.weight"].shape
    depth = _count_blocks(sd, r"blocks\.(\d+)\.")
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
        image_size=_image_size(sd["pos_embed"].shape, patch, backbone.path),
        patch_size=patch, hidden_size=width, depth=depth,
        num_heads=_heads(width, _DINO_HEADS, num_heads, backbone.path, "DINO ViT"),
        mlp_dim=sd["blocks.0.mlp.fc1.weight"].shape[0], num_classes=classes,
        layer_norm_eps=1e-6,  # DINO's vit_* constructors fix eps 1e-6
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        n_last_blocks=int(n_last_blocks if n_last_blocks is not None else 4),
        avgpool_patchtokens=bool(avgpool_patchtokens))
    if head_in != cfg.feature_dim:
        raise ConversionError(
            f"{where}: head takes {head_in} inputs but n_last_blocks={cfg.n_last_blocks}, "
            f"avgpool_patchtokens={cfg.avgpool_patchtokens} give {cfg.feature_dim} features")
    rules = _embedding_rules("patch_embed.proj", "cls_token", "pos_embed")
    for i in range(depth):
        t, b = f"blocks.{i}", f"blocks_{i}"
        rules += _norm(f"{t}.norm1", (b, "ln1"))
        rules += _packed_qkv(f"{t}.attn.qkv.weight",
                             f"{t}.attn.qkv.bias" if cfg.qkv_bias else None, b)
        rules += _dense(f"{t}.attn.proj", (b, "attn", "out"))
        rules += _norm(f"{t}.norm2", (b, "ln2"))
        rules += _dense(f"{t}.mlp.fc1", (b, "mlp", "fc1"))
        rules += _dense(f"{t}.mlp.fc2", (b, "mlp", "fc2"))
    rules += _norm("norm", ("norm",))
    rules += _dense("linear", ("classifier",))
    # One key space: backbone names are disjoint from the head's `linear.*`.
    merged = dict(sd)
    clash = set(merged) & set(hsd)
    if clash:
        raise ConversionError(f"{where}: backbone and head share keys {sorted(clash)}")
    merged.update(hsd)
    # DINO's self-supervised projection head (`head.mlp.*`, `head.last_layer.*`) sits
    # next to the backbone in training checkpoints; it is not the classifier.
    return _convert(dino_model.FAMILY, "dino-vit", cfg, dino_model.build, merged, rules,
                    where, ignore_prefixes=("head.",))
