"""The classifier split every TEXTER stage relies on: normalize / features / head.

A classifier ``f`` is three pure functions (see TEXTER_SPEC "The classifier split"):

* ``normalize(x)``: images NHWC float32 in [0, 1] -> mean/std normalised images;
* ``features(variables, x)``: images in [0, 1] -> penultimate features ``z`` [B, D]
  (``normalize`` is applied inside, so every caller passes [0, 1] pixels);
* ``head(variables, z)``: features [B, D] -> logits [B, C].

``F_c(z) = head(z)[c]`` is what integrated gradients differentiate.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import jax.numpy as jnp
from flax import linen as nn

from texter_jax.types import Array, Variables

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: Array, mean, std) -> Array:
    """(images - mean) / std over the channel axis.

    Args:
      images: float [..., H, W, 3] in [0, 1], NHWC.
      mean, std: three floats each.

    Returns:
      Array of the same shape and dtype.
    """
    mean = jnp.asarray(mean, images.dtype)
    std = jnp.asarray(std, images.dtype)
    return (images - mean) / std


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A Linen classifier seen through the normalize / features / head split.

    ``module`` must expose two Linen methods (defined with ``setup``):
    ``features(x) -> z`` taking *normalised* NHWC images and ``head(z) -> logits``.

    Attributes:
      family: registry name of the model family (``"resnet"``, ``"vit"``, ...).
      module: the Linen module.
      config: the frozen config dataclass the module was built from.
      image_size: side of the square input the model expects (e.g. 224).
      feature_dim: D, the size of ``z``.
      num_classes: C, the number of logits.
      mean, std: channel normalisation constants applied by ``normalize``.
    """

    family: str
    module: nn.Module
    config: Any
    image_size: int
    feature_dim: int
    num_classes: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def normalize(self, images: Array) -> Array:
        """Images float [B, H, W, 3] in [0, 1] -> normalised images, same shape."""
        return normalize_images(images, self.mean, self.std)

    def features(self, variables: Variables, images: Array) -> Array:
        """Images float32 [B, H, W, 3] in [0, 1], NHWC -> features float32 [B, D]."""
        chex.assert_rank(images, 4)
        chex.assert_axis_dimension(images, -1, 3)
        z = self.module.apply(variables, self.normalize(images), method="features")
        return z

    def head(self, variables: Variables, z: Array) -> Array:
        """Features [B, D] -> logits [B, C]."""
        chex.assert_rank(z, 2)
        chex.assert_axis_dimension(z, -1, self.feature_dim)
        return self.module.apply(variables, z, method="head")

    def dummy_inputs(self) -> tuple[Array]:
        """Inputs for ``module.init``: one normalised image [1, S, S, 3]."""
        return (jnp.zeros((1, self.image_size, self.image_size, 3), jnp.float32),)

    def logits(self, variables: Variables, images: Array) -> Array:
        """Images float32 [B, H, W, 3] in [0, 1] -> logits [B, C]."""
        return self.head(variables, self.features(variables, images))


@dataclasses.dataclass(frozen=True)
class FunctionClassifier:
    """Any JAX classifier given as two pure functions (satisfies ``ClassifierLike``).

    Bring your own model: plain ``jax.numpy``, Haiku, or anything else; Keras, Equinox,
    Linen and NNX have adapters that build one (:mod:`texter_jax.adapters`). The
    functions are compared by identity, so build the wrapper once and reuse it (a new
    one recompiles the jitted stages).

    Attributes:
      features_fn: ``(variables, images float32 [B, S, S, 3] in [0, 1]) -> z [B, D]``;
        any input normalisation happens inside.
      head_fn: ``(variables, z [B, D]) -> logits [B, C]``.
      image_size: S.
      feature_dim: D.
      num_classes: C.
      family: a name for reports.
    """

    features_fn: Any
    head_fn: Any
    image_size: int
    feature_dim: int
    num_classes: int
    family: str = "custom"

    def features(self, variables: Variables, images: Array) -> Array:
        return self.features_fn(variables, images)

    def head(self, variables: Variables, z: Array) -> Array:
        return self.head_fn(variables, z)

    def logits(self, variables: Variables, images: Array) -> Array:
        return self.head(variables, self.features(variables, images))


def __getattr__(name):
    # nnx_classifier moved to texter_jax.adapters.nnx_model (which imports this module);
    # old imports from here keep working.
    if name == "nnx_classifier":
        from texter_jax.adapters.nnx_model import nnx_classifier
        return nnx_classifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
