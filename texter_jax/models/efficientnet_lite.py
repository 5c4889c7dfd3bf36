"""EfficientNet-Lite0..4 (Tan & Le 2019, the "Lite" edge variants) in Linen, NHWC.

The Lite family is EfficientNet without squeeze-excite and with ReLU6 instead of swish,
and with the stem (32 channels), the head (1280 channels) and the repeats of the first
and last stage left unscaled. Everything else is MBConv, the mobile inverted bottleneck:

    x -> [1x1 expand + BN + ReLU6]   (skipped when the expand ratio is 1)
      -> kxk depthwise, stride s + BN + ReLU6
      -> 1x1 project + BN            (+ x when stride 1 and the width is unchanged)

Convolutions pad as TensorFlow's ``"SAME"`` (``ceil(n / s)`` outputs, the odd pixel of
padding after), which is what the PyTorch port ``efficientnet-lite-pytorch`` computes
at its build size; BatchNorm epsilon is 1e-3 (TF's). Depthwise convolutions go through
:func:`texter_jax.models.conv.conv_general_dilated` like every other convolution, so
their input gradient stays on XLA:CPU's fast path inside MACO's loop.

TEXTER split: ``features`` is the global average of the head convolution's output
([B, 1280]); ``head`` is the linear classifier on it. Converter:
``converters/efficientnet.py``.

Parameter tree (``params``; BatchNorm ``mean``/``var`` under ``batch_stats``)::

    stem/{conv, bn}
    block{i}/{expand_conv, expand_bn}?, {depthwise_conv, depthwise_bn}, {project_conv, project_bn}
    head_conv, head_bn
    fc/{kernel [1280, C], bias [C]}

References:
  Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", https://arxiv.org/abs/1905.11946
  Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
  https://arxiv.org/abs/1801.04381
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax.numpy as jnp
from flax import linen as nn

from texter_jax.classifier import Classifier
from texter_jax.models.conv import conv_layer, frozen_batch_norm
from texter_jax.models.pooled_cnn import PooledCnn
from texter_jax.models.registry import config_from_dict
from texter_jax.types import Array

FAMILY = "efficientnet_lite"
BN_EPSILON = 1e-3  # TensorFlow's BatchNorm epsilon, kept by the PyTorch port.

# The base network's stages: (repeats, kernel, stride, expand ratio, in, out channels),
# before width/depth scaling (EfficientNet-B0's table without squeeze-excite).
LITE_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# variant -> (width coefficient, depth coefficient, input resolution).
VARIANTS: dict[str, tuple[float, float, int]] = {
    "lite0": (1.0, 1.0, 224),
    "lite1": (1.0, 1.1, 240),
    "lite2": (1.1, 1.2, 260),
    "lite3": (1.2, 1.4, 280),
    "lite4": (1.4, 1.8, 300),
}


class MBConvSpec(NamedTuple):
    """Static shape of one MBConv block (shared by the model and the converter)."""

    index: int  # 0-based position among all blocks
    in_channels: int
    out_channels: int
    expand_ratio: int
    kernel: int
    stride: int

    @property
    def inner(self) -> int:
        return self.in_channels * self.expand_ratio

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scales a channel count by ``width`` and rounds to a multiple of ``divisor``,
    never more than 10 % below the scaled value (the TF reference rule)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EfficientNetLiteConfig:
    """Architecture of an EfficientNet-Lite classifier (defaults: Lite0, ImageNet).

    Attributes:
      width_coefficient: channel multiplier of every stage except the stem and head.
      depth_coefficient: repeat multiplier of every stage except the first and last.
      stages: the base table, ``(repeats, kernel, stride, expand, in, out)`` per stage.
      stem_width, head_width: channels of the stem conv and of the 1x1 head conv.
      depth_divisor: channel counts are rounded to multiples of this.
      num_classes: C, the number of logits.
      image_size: side of the square input the variant was trained at (224 for Lite0);
        the network accepts any size.
    """

    width_coefficient: float = 1.0
    depth_coefficient: float = 1.0
    stages: tuple[tuple[int, ...], ...] = LITE_STAGES
    stem_width: int = 32
    head_width: int = 1280
    depth_divisor: int = 8
    num_classes: int = 1000
    image_size: int = 224

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(tuple(int(v) for v in s) for s in self.stages))
        if not self.stages or any(len(s) != 6 or min(s) < 1 for s in self.stages):
            raise ValueError("EfficientNetLiteConfig.stages: each stage is six positive "
                             "integers (repeats, kernel, stride, expand, in, out); "
                             f"got {self.stages}")
        if self.width_coefficient <= 0 or self.depth_coefficient <= 0:
            raise ValueError("EfficientNetLiteConfig: width and depth coefficients must be "
                             f"positive ({self.width_coefficient}, {self.depth_coefficient})")
        if self.num_classes < 1:
            raise ValueError("EfficientNetLiteConfig.num_classes must be >= 1, "
                             f"got {self.num_classes}")

    @classmethod
    def from_variant(cls, variant: str, *, num_classes: int = 1000) -> EfficientNetLiteConfig:
        """``"lite0"`` .. ``"lite4"`` (``"efficientnet-lite0"`` is accepted too)."""
        name = variant.removeprefix("efficientnet-")
        if name not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: "
                             f"{', '.join(VARIANTS)}")
        width, depth, size = VARIANTS[name]
        return cls(width_coefficient=width, depth_coefficient=depth, image_size=size,
                   num_classes=num_classes)

    @property
    def feature_dim(self) -> int:
        return self.head_width

    def block_specs(self) -> list[MBConvSpec]:
        """Every MBConv block in order, after width/depth scaling."""
        specs: list[MBConvSpec] = []
        last = len(self.stages) - 1
        for s, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(self.stages):
            # Lite keeps the stem, and so the first stage's input, at stem_width.
            c_in = self.stem_width if s == 0 else round_filters(
                c_in, self.width_coefficient, self.depth_divisor)
            c_out = round_filters(c_out, self.width_coefficient, self.depth_divisor)
            if s not in (0, last):
                repeats = int(math.ceil(self.depth_coefficient * repeats))
            for r in range(repeats):
                specs.append(MBConvSpec(len(specs), c_in if r == 0 else c_out, c_out, expand,
                                        kernel, stride if r == 0 else 1))
        return specs


def _conv(features: int, kernel: int, stride: int, name: str, groups: int = 1) -> nn.Conv:
    return conv_layer(features, kernel, stride, name, padding="SAME", groups=groups)


_bn = functools.partial(frozen_batch_norm, epsilon=BN_EPSILON)


class MBConv(nn.Module):
    """One mobile inverted bottleneck: [B, H, W, C_in] -> [B, H/s, W/s, C_out]."""

    spec: MBConvSpec

    @nn.compact
    def __call__(self, x: Array) -> Array:
        p, y = self.spec, x
        if p.expand_ratio != 1:
            y = nn.relu6(_bn("expand_bn")(_conv(p.inner, 1, 1, "expand_conv")(y)))
        y = _conv(p.inner, p.kernel, p.stride, "depthwise_conv", groups=p.inner)(y)
        y = nn.relu6(_bn("depthwise_bn")(y))
        y = _bn("project_bn")(_conv(p.out_channels, 1, 1, "project_conv")(y))
        return y + x if p.residual else y


class EfficientNetLite(PooledCnn):
    """EfficientNet-Lite classifier on *normalised* NHWC images.

    Activations (``__call__``): ``stem`` [B, H/2, W/2, 32], ``block0`` .. ``blockN``
    (NHWC), ``head`` [B, H/32, W/32, head_width], ``features`` [B, head_width].
    """

    config: EfficientNetLiteConfig

    def setup(self):
        c = self.config
        self.stem_conv = _conv(c.stem_width, 3, 2, "stem_conv")
        self.stem_bn = _bn("stem_bn")
        self.blocks = [MBConv(spec, name=f"block{spec.index}") for spec in c.block_specs()]
        self.head_conv = _conv(c.head_width, 1, 1, "head_conv")
        self.head_bn = _bn("head_bn")
        self.fc = nn.Dense(c.num_classes)

    def _forward(self, x: Array) -> dict[str, Array]:
        h = acts_stem = nn.relu6(self.stem_bn(self.stem_conv(x)))
        acts = {"stem": acts_stem}
        for block in self.blocks:
            h = acts[block.name] = block(h)
        acts["head"] = nn.relu6(self.head_bn(self.head_conv(h)))
        acts["features"] = jnp.mean(acts["head"], axis=(1, 2))  # global average pool
        return acts


def make_classifier(config: EfficientNetLiteConfig) -> Classifier:
    """Wraps an EfficientNet-Lite of ``config`` in the normalize / features / head split
    (ImageNet mean/std, as the PyTorch port's weights expect)."""
    return Classifier(family=FAMILY, module=EfficientNetLite(config), config=config,
                      image_size=config.image_size, feature_dim=config.feature_dim,
                      num_classes=config.num_classes)


def build(family: str, config: dict[str, Any]) -> Classifier:
    """Registry entry point: ``("efficientnet_lite", config_dict) -> Classifier``."""
    if family != FAMILY:
        raise ValueError(f"texter_jax.models.efficientnet_lite builds family {FAMILY!r}, "
                         f"not {family!r}")
    return make_classifier(config_from_dict(EfficientNetLiteConfig, config))
