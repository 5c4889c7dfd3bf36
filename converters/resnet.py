"""torchvision / Hugging Face / DINO ResNet weights -> :mod:`texter_jax.models.resnet`.

Key tables (torch name -> Flax path; ``P`` = params, ``S`` = batch_stats):

=================================================  =========================================
torchvision                                        Flax
=================================================  =========================================
``conv1.weight``                                   ``P/stem/conv/kernel`` (OIHW -> HWIO)
``bn1.{weight,bias}``                              ``P/stem/bn/{scale,bias}``
``bn1.{running_mean,running_var}``                 ``S/stem/bn/{mean,var}``
``layer{s}.{b}.conv{k}.weight``, ``bn{k}.*``       ``stage{s}/block{b}/conv{k}``, ``bn{k}``
``layer{s}.{b}.downsample.{0,1}.*``                ``stage{s}/block{b}/shortcut_{conv,bn}``
``fc.{weight,bias}``                               ``P/fc/{kernel,bias}`` (weight transposed)
=================================================  =========================================

Hugging Face ``ResNetForImageClassification``: ``resnet.embedder.embedder.*`` -> stem,
``resnet.encoder.stages.{s}.layers.{b}.layer.{k}.{convolution,normalization}`` ->
``stage{s+1}/block{b}/{conv,bn}{k+1}``, ``...shortcut.*`` -> ``shortcut_*``,
``classifier.1.*`` -> ``fc``. DINO: a torchvision backbone plus ``linear.*`` -> ``fc``.

``num_batches_tracked`` buffers are dropped; every other key must be used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from texter_jax.converters.mapping import (
    ConversionError,
    Converted,
    Rule,
    apply_rules,
    conv_kernel,
    linear_kernel,
)
from texter_jax.converters.state_dict import Source
from texter_jax.models.registry import abstract_variables, config_to_dict
from texter_jax.models.resnet import ResNetConfig, make_classifier

TORCHVISION = "torchvision-resnet"
HF = "hf-resnet"
DINO = "dino-resnet"


# ----------------------------------------------------------------------------- helpers


def _bn_rules(torch_prefix: str, flax_path: tuple[str, ...]) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", ("params", *flax_path, "scale")),
            Rule(f"{torch_prefix}.bias", ("params", *flax_path, "bias")),
            Rule(f"{torch_prefix}.running_mean", ("batch_stats", *flax_path, "mean")),
            Rule(f"{torch_prefix}.running_var", ("batch_stats", *flax_path, "var"))]


def _conv_rule(torch_key: str, flax_path: tuple[str, ...]) -> Rule:
    return Rule(torch_key, ("params", *flax_path, "kernel"), conv_kernel)


def _linear_rules(torch_prefix: str, flax_path: tuple[str, ...]) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", ("params", *flax_path, "kernel"), linear_kernel),
            Rule(f"{torch_prefix}.bias", ("params", *flax_path, "bias"))]


def _convs_per_block(cfg: ResNetConfig) -> int:
    return 2 if cfg.block == "basic" else 3


def strip_prefix(state_dict: dict[str, np.ndarray],
                 prefixes: Iterable[str] = ("module.",)) -> dict[str, np.ndarray]:
    """Drops wrapper prefixes (DDP's ``module.``, DINO's ``backbone.``) shared by all keys."""
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if state_dict and all(k.startswith(p) for k in state_dict):
                state_dict = {k[len(p):]: v for k, v in state_dict.items()}
                changed = True
    return state_dict


def detect_layout(state_dict_keys: Iterable[str]) -> str | None:
    """``"torchvision-resnet"``, ``"hf-resnet"`` or None, from the key names alone.

    Wrapper prefixes shared by all keys (DDP ``module.``, DINO ``backbone.``) are tolerated.
    """
    keys = set(strip_prefix(dict.fromkeys(state_dict_keys), ("module.", "backbone.")))
    if "resnet.embedder.embedder.convolution.weight" in keys:
        return HF
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
        return TORCHVISION
    return None


def _converted(family: str, cfg: ResNetConfig, state_dict: dict[str, np.ndarray],
               rules: list[Rule], layout: str, source: str, **kw) -> Converted:
    expected = abstract_variables(make_classifier(cfg, family))
    variables = apply_rules(state_dict, rules, expected, source=source, **kw)
    return Converted(family=family, config=config_to_dict(cfg), variables=variables,
                     layout=layout)


# ------------------------------------------------------------------------- torchvision


def _need(state_dict: dict[str, np.ndarray], key: str, source: str, why: str) -> np.ndarray:
    if key not in state_dict:
        raise ConversionError(f"cannot convert {source}: missing key {key} (needed {why})",
                              missing=[key])
    return state_dict[key]


def infer_torchvision_config(state_dict: dict[str, np.ndarray], *, source: str = "<state dict>",
                             num_classes: int | None = None,
                             head_key: str | None = "fc.weight") -> ResNetConfig:
    """Reads block type, blocks per stage and widths off torchvision key names and shapes.

    Args:
      state_dict: torchvision ResNet state dict (no wrapper prefix).
      source: name for error messages.
      num_classes: expected number of classes; checked against ``head_key`` when both
        are given, used as is when ``head_key`` is None.
      head_key: the linear head's weight [C, D] (None: no head in this state dict).
    """
    bottleneck = "layer1.0.conv3.weight" in state_dict
    block = "bottleneck" if bottleneck else "basic"
    last_conv = "conv3" if bottleneck else "conv2"
    stem = _need(state_dict, "conv1.weight", source, "for the stem width")
    depths, widths = [], []
    for s in range(1, 5):  # torchvision's ResNet always has layer1..layer4
        pattern = re.compile(rf"layer{s}\.(\d+)\.conv1\.weight")
        blocks = {int(m.group(1)) for k in state_dict if (m := pattern.fullmatch(k))}
        if not blocks:
            raise ConversionError(f"cannot convert {source}: no layer{s}.*.conv1.weight key; "
                                  "not a torchvision ResNet")
        depths.append(max(blocks) + 1)
        widths.append(int(_need(state_dict, f"layer{s}.0.{last_conv}.weight", source,
                                "for the stage width").shape[0]))
    reduction = 4
    if bottleneck:
        inner = _need(state_dict, "layer1.0.conv2.weight", source, "for the bottleneck width")
        if inner.shape[1] != inner.shape[0]:
            raise ConversionError(
                f"cannot convert {source}: grouped 3x3 convolutions (ResNeXt, "
                f"layer1.0.conv2.weight {inner.shape}) are not supported")
        if widths[0] % inner.shape[0]:
            raise ConversionError(f"cannot convert {source}: bottleneck width {inner.shape[0]} "
                                  f"does not divide the stage width {widths[0]}")
        reduction = widths[0] // int(inner.shape[0])
    if head_key is not None:
        head = _need(state_dict, head_key, source,
                     "for the linear head; a backbone without fc, like DINO's, is converted "
                     "with its head file: convert_dino_resnet / `texter convert --head`")
        if num_classes is not None and head.shape[0] != num_classes:
            raise ConversionError(f"cannot convert {source}: {head_key} has {head.shape[0]} "
                                  f"classes, expected num_classes={num_classes}")
        num_classes = int(head.shape[0])
    if num_classes is None:
        raise ConversionError(f"cannot convert {source}: no linear head and no num_classes")
    return ResNetConfig(block=block, depths=tuple(depths), widths=tuple(widths),
                        stem_width=int(stem.shape[0]), bottleneck_reduction=reduction,
                        num_classes=num_classes)


def torchvision_rules(cfg: ResNetConfig, *, head_prefix: str = "fc") -> list[Rule]:
    """The explicit torchvision key table for ``cfg`` (head under ``head_prefix``)."""
    rules = [_conv_rule("conv1.weight", ("stem", "conv")), *_bn_rules("bn1", ("stem", "bn"))]
    for spec in cfg.block_specs():
        t = f"layer{spec.stage + 1}.{spec.index}"
        f = (f"stage{spec.stage + 1}", f"block{spec.index}")
        for k in range(1, _convs_per_block(cfg) + 1):
            rules.append(_conv_rule(f"{t}.conv{k}.weight", (*f, f"conv{k}")))
            rules += _bn_rules(f"{t}.bn{k}", (*f, f"bn{k}"))
        if spec.has_shortcut:
            rules.append(_conv_rule(f"{t}.downsample.0.weight", (*f, "shortcut_conv")))
            rules += _bn_rules(f"{t}.downsample.1", (*f, "shortcut_bn"))
    return rules + _linear_rules(head_prefix, ("fc",))


def convert_torchvision_resnet(source: Source, *, num_classes: int | None = None) -> Converted:
    """torchvision ``resnet18/34/50/101/152`` (or ``ResNet(...)``) state dict -> family "resnet".

    The architecture is read off the keys; ``num_classes``, when given, must match
    ``fc.weight``. Wrapper prefixes (``module.``, ``backbone.``) are stripped.
    """
    sd = strip_prefix(source.state_dict, ("module.", "backbone."))
    cfg = infer_torchvision_config(sd, source=source.path, num_classes=num_classes)
    return _converted("resnet", cfg, sd, torchvision_rules(cfg), TORCHVISION, source.path)


# ------------------------------------------------------------------------ Hugging Face

# HF config attributes we map onto ResNetConfig.
_HF_HANDLED = {"embedding_size", "hidden_sizes", "depths", "layer_type",
               "downsample_in_first_stage", "downsample_in_bottleneck",
               "id2label", "label2id", "num_labels"}
# Handled only at this value (anything else changes the computation and is unsupported).
_HF_REQUIRED = {"num_channels": 3, "hidden_act": "relu", "model_type": "resnet"}
# Metadata that does not change the forward pass.
_HF_IGNORED = {"architectures", "transformers_version", "dtype", "torch_dtype",
               "_name_or_path", "out_features", "out_indices", "stage_names", "return_dict",
               "output_hidden_states", "output_attentions", "problem_type", "use_return_dict",
               "chunk_size_feed_forward", "is_encoder_decoder", "torchscript"}


def resnet_config_from_hf(hf_config: dict[str, Any], *,
                          source: str = "<config.json>") -> ResNetConfig:
    """HF ``ResNetConfig`` (config.json dict) -> ResNetConfig, refusing what we can't run."""
    unknown = sorted(set(hf_config) - _HF_HANDLED - set(_HF_REQUIRED) - _HF_IGNORED)
    bad = [f"{k}={hf_config[k]!r} (supported: {v!r})" for k, v in _HF_REQUIRED.items()
           if k in hf_config and hf_config[k] != v]
    if unknown or bad:
        raise ConversionError(
            f"cannot convert {source}: unsupported HF ResNet config attributes: "
            + "; ".join(bad + [f"{k}={hf_config[k]!r} (unknown)" for k in unknown]))
    arch = hf_config.get("architectures") or ["ResNetForImageClassification"]
    if "ResNetForImageClassification" not in arch:
        raise ConversionError(f"cannot convert {source}: architectures={arch}; only "
                              "ResNetForImageClassification (with its classifier) is supported")
    # HF defaults (transformers ResNetConfig) for the keys config.json may omit.
    num_classes = len(hf_config["id2label"]) if hf_config.get("id2label") else \
        int(hf_config.get("num_labels", 2))
    if "num_labels" in hf_config and int(hf_config["num_labels"]) != num_classes:
        raise ConversionError(f"cannot convert {source}: num_labels={hf_config['num_labels']} "
                              f"but id2label has {num_classes} entries")
    try:
        return ResNetConfig(
            block=hf_config.get("layer_type", "bottleneck"),
            depths=tuple(hf_config.get("depths", (3, 4, 6, 3))),
            widths=tuple(hf_config.get("hidden_sizes", (256, 512, 1024, 2048))),
            stem_width=int(hf_config.get("embedding_size", 64)),
            bottleneck_reduction=4,  # HF ResNetBottleNeckLayer's fixed `reduction`
            stride_in_1x1=bool(hf_config.get("downsample_in_bottleneck", False)),
            downsample_in_first_stage=bool(hf_config.get("downsample_in_first_stage", False)),
            num_classes=num_classes)
    except ValueError as e:
        raise ConversionError(f"cannot convert {source}: {e}") from e


def hf_rules(cfg: ResNetConfig) -> list[Rule]:
    """The explicit ``ResNetForImageClassification`` key table for ``cfg``."""
    stem = "resnet.embedder.embedder"
    rules = [_conv_rule(f"{stem}.convolution.weight", ("stem", "conv")),
             *_bn_rules(f"{stem}.normalization", ("stem", "bn"))]
    for spec in cfg.block_specs():
        t = f"resnet.encoder.stages.{spec.stage}.layers.{spec.index}"
        f = (f"stage{spec.stage + 1}", f"block{spec.index}")
        for k in range(_convs_per_block(cfg)):
            rules.append(_conv_rule(f"{t}.layer.{k}.convolution.weight", (*f, f"conv{k + 1}")))
            rules += _bn_rules(f"{t}.layer.{k}.normalization", (*f, f"bn{k + 1}"))
        if spec.has_shortcut:
            rules.append(_conv_rule(f"{t}.shortcut.convolution.weight", (*f, "shortcut_conv")))
            rules += _bn_rules(f"{t}.shortcut.normalization", (*f, "shortcut_bn"))
    return rules + _linear_rules("classifier.1", ("fc",))


def convert_hf_resnet(source: Source) -> Converted:
    """HF ``ResNetForImageClassification`` folder (config.json + weights) -> family "resnet"."""
    if source.hf_config is None:
        raise ConversionError(f"cannot convert {source.path}: an HF ResNet needs its "
                              "config.json (pass the model folder, not the weights file)")
    cfg = resnet_config_from_hf(source.hf_config, source=source.path)
    return _converted("resnet", cfg, source.state_dict, hf_rules(cfg), HF, source.path)


# -------------------------------------------------------------------------------- DINO


def convert_dino_resnet(backbone: Source, head: Source) -> Converted:
    """DINO ResNet-50 backbone (torchvision keys, no ``fc``) + eval_linear head -> "dino_resnet".

    Args:
      backbone: e.g. ``dino_resnet50_pretrain.pth``; ``module.``/``backbone.`` prefixes are
        stripped and ``fc.*`` (absent or an unused leftover) is ignored.
      head: e.g. ``dino_resnet50_linearweights.pth``: ``linear.weight`` [C, 2048] and
        ``linear.bias`` [C], usually under ``state_dict`` with a DDP ``module.`` prefix.
    """
    sd = strip_prefix(backbone.state_dict, ("module.", "backbone."))
    head_sd = strip_prefix(head.state_dict)
    name = f"{backbone.path} + {head.path}"
    if "linear.weight" not in head_sd:
        raise ConversionError(f"cannot convert {name}: the head file has no linear.weight "
                              f"(keys: {sorted(head_sd)[:10]})")
    clash = sorted(set(sd) & set(head_sd))
    if clash:
        raise ConversionError(f"cannot convert {name}: keys in both files: {clash}")
    cfg = infer_torchvision_config(sd, source=backbone.path, head_key=None,
                                   num_classes=int(head_sd["linear.weight"].shape[0]))
    merged = {**{k: v for k, v in sd.items() if not k.startswith("fc.")}, **head_sd}
    return _converted("dino_resnet", cfg, merged, torchvision_rules(cfg, head_prefix="linear"),
                      DINO, name)
