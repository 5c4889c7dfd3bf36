"""ResNet-18/34/50/101/152 in Linen, NHWC, inference-mode BatchNorm.

One module covers both upstream layouts we convert from:

* torchvision ``resnet18/34/50/101/152`` (ResNet v1.5: a bottleneck strides in its 3x3
  conv; the first stage never strides), and ``wide_resnet50_2``-style widths;
* Hugging Face ``ResNetForImageClassification`` (any ``hidden_sizes`` / ``depths`` /
  ``embedding_size``; ``downsample_in_bottleneck`` moves the stride to the first 1x1
  conv, ``downsample_in_first_stage`` makes the first stage stride by 2).

Both share the same structure: a 7x7/2 conv + BN + ReLU + 3x3/2 max-pool stem, stages of
residual blocks whose first block gets a 1x1 conv + BN shortcut when the channel count or
the resolution changes, global average pooling, and one linear layer. Only the key names
differ, and those are the converters' business (``converters/resnet.py``).

References:
  He et al., "Deep Residual Learning for Image Recognition", https://arxiv.org/abs/1512.03385
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from texter_jax.classifier import Classifier
from texter_jax.models import registry
from texter_jax.models.conv import conv_layer, frozen_batch_norm
from texter_jax.models.pooled_cnn import PooledCnn
from texter_jax.types import Array

BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d default, used by torchvision and HF ResNets.
BLOCKS = ("basic", "bottleneck")

# depth -> (block, blocks per stage) for the standard torchvision architectures.
STANDARD_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
_STANDARD_WIDTHS = {"basic": (64, 128, 256, 512), "bottleneck": (256, 512, 1024, 2048)}


class BlockSpec(NamedTuple):
    """Static shape of one residual block (shared by the model and the converters)."""

    stage: int  # 0-based stage index
    index: int  # 0-based block index inside the stage
    in_channels: int
    out_channels: int
    stride: int
    has_shortcut: bool  # 1x1 conv + BN on the residual path


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResNetConfig:
    """Architecture of a ResNet classifier.

    Attributes:
      block: ``"basic"`` (two 3x3 convs) or ``"bottleneck"`` (1x1 -> 3x3 -> 1x1).
      depths: residual blocks per stage (torchvision ``layers``, HF ``depths``).
      widths: output channels of each stage (HF ``hidden_sizes``; torchvision
        ``planes * expansion``: 64..512 for basic, 256..2048 for bottleneck).
      stem_width: output channels of the 7x7 stem conv (HF ``embedding_size``).
      bottleneck_reduction: a bottleneck's inner width is ``width // reduction``
        (4 for ResNet-50; 2 for torchvision ``wide_resnet50_2``). Ignored for basic.
      stride_in_1x1: a strided bottleneck puts its stride on the first 1x1 conv
        (ResNet v1, HF ``downsample_in_bottleneck=True``) instead of the 3x3 conv
        (v1.5: torchvision, HF default).
      downsample_in_first_stage: the first stage strides by 2 (HF flag; torchvision:
        False, since the stem's max-pool already downsampled).
      num_classes: number of logits.
      image_size: side of the square input used for ``init`` / shape checks; the network
        itself accepts any size >= 32.
    """

    block: str = "bottleneck"
    depths: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (256, 512, 1024, 2048)
    stem_width: int = 64
    bottleneck_reduction: int = 4
    stride_in_1x1: bool = False
    downsample_in_first_stage: bool = False
    num_classes: int = 1000
    image_size: int = 224

    def __post_init__(self):
        # JSON gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.block not in BLOCKS:
            raise ValueError(f"ResNetConfig.block must be one of {BLOCKS}, got {self.block!r}")
        if not self.depths or len(self.depths) != len(self.widths):
            raise ValueError(f"ResNetConfig: depths {self.depths} and widths {self.widths} "
                             "must be non-empty and of equal length")
        if min(self.depths) < 1 or min(self.widths) < 1 or self.stem_width < 1:
            raise ValueError(f"ResNetConfig: depths, widths and stem_width must be positive "
                             f"({self.depths}, {self.widths}, {self.stem_width})")
        if self.block == "bottleneck" and any(w % self.bottleneck_reduction for w in self.widths):
            raise ValueError(f"ResNetConfig: widths {self.widths} must be divisible by "
                             f"bottleneck_reduction={self.bottleneck_reduction}")
        if self.num_classes < 1:
            raise ValueError(f"ResNetConfig.num_classes must be >= 1, got {self.num_classes}")

    @classmethod
    def from_depth(cls, depth: int, *, num_classes: int = 1000, **kw) -> ResNetConfig:
        """The torchvision ResNet-``depth`` (18, 34, 50, 101 or 152)."""
        if depth not in STANDARD_DEPTHS:
            raise ValueError(f"no standard ResNet-{depth}; known: {sorted(STANDARD_DEPTHS)}")
        block, depths = STANDARD_DEPTHS[depth]
        return cls(block=block, depths=depths, widths=_STANDARD_WIDTHS[block],
                   num_classes=num_classes, **kw)

    @property
    def depth(self) -> int:
        """Number of weighted layers (stem conv + block convs + fc), e.g. 50."""
        return 2 + sum(self.depths) * (2 if self.block == "basic" else 3)

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    def block_specs(self) -> list[BlockSpec]:
        """Every residual block in order; the shortcut rule is torchvision's and HF's:
        a projection whenever the channel count or the resolution changes."""
        specs, in_ch = [], self.stem_width
        for s, (n, width) in enumerate(zip(self.depths, self.widths, strict=True)):
            for b in range(n):
                stride = 2 if b == 0 and (s > 0 or self.downsample_in_first_stage) else 1
                specs.append(BlockSpec(s, b, in_ch, width, stride,
                                       in_ch != width or stride != 1))
                in_ch = width
        return specs


def config_from_dict(config: dict[str, Any]) -> ResNetConfig:
    """JSON config dict (``dataclasses.asdict`` of a ResNetConfig) -> ResNetConfig."""
    return registry.config_from_dict(ResNetConfig, config)


def _conv(features: int, kernel: int, stride: int, name: str) -> nn.Conv:
    # torch pads k // 2 on every side; "SAME" would pad asymmetrically at stride 2.
    pad = kernel // 2
    return conv_layer(features, kernel, stride, name, padding=((pad, pad), (pad, pad)))


_bn = functools.partial(frozen_batch_norm, epsilon=BN_EPSILON)


class Stem(nn.Module):
    """7x7/2 conv + BN + ReLU + 3x3/2 max-pool: [B, H, W, 3] -> [B, H/4, W/4, width]."""

    width: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = nn.relu(_bn("bn")(_conv(self.width, 7, 2, "conv")(x)))
        # Padding with -inf (Flax's reduce_window init) matches torch's MaxPool2d padding.
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class Block(nn.Module):
    """One residual block: [B, H, W, C_in] -> [B, H/stride, W/stride, C_out]."""

    spec: BlockSpec
    block: str
    bottleneck_reduction: int
    stride_in_1x1: bool

    @nn.compact
    def __call__(self, x: Array) -> Array:
        s, out = self.spec.stride, self.spec.out_channels
        if self.block == "basic":
            y = nn.relu(_bn("bn1")(_conv(out, 3, s, "conv1")(x)))
            y = _bn("bn2")(_conv(out, 3, 1, "conv2")(y))
        else:
            inner = out // self.bottleneck_reduction
            s1, s3 = (s, 1) if self.stride_in_1x1 else (1, s)
            y = nn.relu(_bn("bn1")(_conv(inner, 1, s1, "conv1")(x)))
            y = nn.relu(_bn("bn2")(_conv(inner, 3, s3, "conv2")(y)))
            y = _bn("bn3")(_conv(out, 1, 1, "conv3")(y))
        if self.spec.has_shortcut:
            x = _bn("shortcut_bn")(_conv(out, 1, s, "shortcut_conv")(x))
        return nn.relu(y + x)


class Stage(nn.Module):
    """A stack of residual blocks named ``block0``, ``block1``, ..."""

    specs: tuple[BlockSpec, ...]
    block: str
    bottleneck_reduction: int
    stride_in_1x1: bool

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for spec in self.specs:
            x = Block(spec, self.block, self.bottleneck_reduction, self.stride_in_1x1,
                      name=f"block{spec.index}")(x)
        return x


class ResNet(PooledCnn):
    """ResNet classifier on *normalised* NHWC images.

    Variables: ``params`` and ``batch_stats`` (``mean``/``var`` of every BatchNorm),
    under ``stem``, ``stage1`` .. ``stageN`` (blocks ``blockK`` with ``conv1``/``bn1``
    .. and optionally ``shortcut_conv``/``shortcut_bn``) and ``fc``. Activations
    (``__call__``): ``stem`` [B, H/4, W/4, stem_width], ``stage1`` .. ``stageN`` (NHWC),
    ``features`` [B, widths[-1]].
    """

    config: ResNetConfig

    def setup(self):
        c = self.config
        self.stem = Stem(c.stem_width)
        specs = c.block_specs()
        self.stage_names = tuple(f"stage{s + 1}" for s in range(len(c.depths)))
        for s, name in enumerate(self.stage_names):
            setattr(self, name, Stage(tuple(p for p in specs if p.stage == s), c.block,
                                      c.bottleneck_reduction, c.stride_in_1x1))
        self.fc = nn.Dense(c.num_classes)

    def _forward(self, x: Array) -> dict[str, Array]:
        acts = {"stem": self.stem(x)}
        h = acts["stem"]
        for name in self.stage_names:
            h = acts[name] = getattr(self, name)(h)
        acts["features"] = jnp.mean(h, axis=(1, 2))  # global average pool
        return acts


def make_classifier(config: ResNetConfig, family: str = "resnet") -> Classifier:
    """Wraps a ResNet of ``config`` in the normalize / features / head split."""
    return Classifier(family=family, module=ResNet(config), config=config,
                      image_size=config.image_size, feature_dim=config.feature_dim,
                      num_classes=config.num_classes)


def build(family: str, config: dict[str, Any]) -> Classifier:
    """Registry entry point: ``("resnet", config_dict) -> Classifier``."""
    if family != "resnet":
        raise ValueError(f"texter_jax.models.resnet builds family 'resnet', not {family!r}")
    return make_classifier(config_from_dict(config), family)


def random_variables(model: Classifier, seed: int = 0) -> dict:
    """Random variables for ``model`` without running Linen ``init`` (fast; for tests).

    Shapes come from ``jax.eval_shape``; values from a seeded numpy Generator: He-normal
    conv kernels, LeCun-normal dense kernels, small biases, and BatchNorm scales and
    running statistics away from the identity so that BN is really exercised.

    Returns:
      Nested dict of float32 numpy arrays with the paths of ``model.module.init``.
    """
    rng = np.random.default_rng(seed)
    flat, treedef = jax.tree_util.tree_flatten_with_path(registry.abstract_variables(model))
    leaves = []
    for path, leaf in flat:
        name, shape = str(path[-1].key), tuple(leaf.shape)
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        if name == "kernel":
            gain = 2.0 if len(shape) == 4 else 1.0  # ReLU after convs; none after fc.
            v = rng.normal(0.0, np.sqrt(gain / fan_in), shape)
        elif name == "scale":
            v = rng.uniform(0.5, 1.5, shape)
        elif name == "var":
            v = rng.uniform(0.5, 2.0, shape)
        elif name in ("bias", "mean"):
            v = rng.normal(0.0, 0.1, shape)
        else:
            v = rng.normal(0.0, 0.02, shape)
        leaves.append(np.asarray(v, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)
