"""Vision Transformer (Dosovitskiy et al. 2021, arXiv 2010.11929) in Linen.

One module covers torchvision ``VisionTransformer`` (``vit_b_16`` etc.) and Hugging Face
``ViTForImageClassification``: patch convolution, class token, learned position
embeddings, pre-LayerNorm encoder blocks (multi-head self-attention + GELU MLP), a
final LayerNorm and a linear head. Converters live in ``converters/vit.py``.

TEXTER split (TEXTER_SPEC "The classifier split"): ``features`` is the class token
after the final encoder LayerNorm ([B, hidden], 768-d for ViT-B/16) and ``head`` the
linear classifier on it.

Parameter tree (``params``)::

    patch_embed/{kernel [p, p, 3, D], bias [D]}
    cls_token [1, 1, D]
    pos_embed [1, 1 + (S/p)^2, D]
    blocks_i/{ln1, attn/{query, key, value, out}, ln2, mlp/{fc1, fc2}}
    norm/{scale, bias}
    classifier/{kernel [D, C], bias [C]}
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from texter_jax.classifier import IMAGENET_MEAN, IMAGENET_STD, Classifier
from texter_jax.models.registry import abstract_variables
from texter_jax.types import Array

FAMILY = "vit"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViTConfig:
    """Architecture of a ViT classifier (defaults: torchvision ``vit_b_16``).

    Attributes:
      image_size: side S of the square input; position embeddings are learned for
        exactly (S / patch_size)^2 patches (no interpolation).
      patch_size: side p of the square patches (the patch conv's kernel and stride).
      hidden_size: token width D.
      depth: number of encoder blocks.
      num_heads: attention heads; must divide ``hidden_size``.
      mlp_dim: hidden width of each block's MLP.
      num_classes: C, the number of logits.
      layer_norm_eps: epsilon of every LayerNorm (torchvision and DINO 1e-6, HF ViT
        ``config.layer_norm_eps``, 1e-12 by default).
      qkv_bias: whether the query/key/value projections have biases.
      mean, std: channel normalisation applied by ``Classifier.normalize`` (ImageNet
        for torchvision; HF ViT checkpoints usually use 0.5 / 0.5).
    """

    image_size: int = 224
    patch_size: int = 16
    hidden_size: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    num_classes: int = 1000
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        # JSON gives lists back; keep the dataclass hashable and comparable.
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def _layer_norm(eps: float, name: str | None = None) -> nn.LayerNorm:
    # Two-pass variance: with HF's eps 1e-12 the fast E[x^2]-E[x]^2 form loses digits.
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate query/key/value/out projections.

    Separate projections (rather than one packed qkv) let torchvision's packed
    ``in_proj_weight``, DINO's ``qkv`` and HF's ``q/k/v_proj`` all map by slicing.
    """

    num_heads: int
    qkv_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Tokens [B, N, D] -> tokens [B, N, D]."""
        b, n, d = x.shape
        hd = d // self.num_heads

        def proj(name, bias):
            y = nn.Dense(d, use_bias=bias, name=name)(x)
            return y.reshape(b, n, self.num_heads, hd)

        q = proj("query", self.qkv_bias)
        k = proj("key", self.qkv_bias)
        v = proj("value", self.qkv_bias)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (hd ** -0.5)
        weights = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, d)
        return nn.Dense(d, name="out")(out)


class Mlp(nn.Module):
    """Dense(mlp_dim) -> exact (erf) GELU -> Dense(D), as torch ``nn.GELU()``."""

    mlp_dim: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = nn.Dense(self.mlp_dim, name="fc1")(x)
        h = jax.nn.gelu(h, approximate=False)
        return nn.Dense(x.shape[-1], name="fc2")(h)


class EncoderBlock(nn.Module):
    """Pre-LN block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``; [B, N, D] -> same."""

    num_heads: int
    mlp_dim: int
    eps: float
    qkv_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = x + SelfAttention(self.num_heads, self.qkv_bias, name="attn")(
            _layer_norm(self.eps, "ln1")(x))
        return x + Mlp(self.mlp_dim, name="mlp")(_layer_norm(self.eps, "ln2")(x))


class VisionTransformer(nn.Module):
    """ViT classifier on *normalised* NHWC images (see :class:`ViTConfig`).

    Subclasses (DINO) reuse ``setup`` and ``tokens`` and override ``pool``.
    """

    config: Any  # ViTConfig, or any config with the same architecture fields

    def setup(self):
        c = self.config
        p = c.patch_size
        self.patch_embed = nn.Conv(c.hidden_size, (p, p), strides=(p, p), padding="VALID")
        self.cls_token = self.param("cls_token", nn.initializers.zeros,
                                    (1, 1, c.hidden_size))
        self.pos_embed = self.param("pos_embed", nn.initializers.normal(0.02),
                                    (1, c.num_patches + 1, c.hidden_size))
        self.blocks = [EncoderBlock(c.num_heads, c.mlp_dim, c.layer_norm_eps, c.qkv_bias)
                       for _ in range(c.depth)]
        self.norm = _layer_norm(c.layer_norm_eps)
        # Not named `head`: that name is the Classifier-contract method below.
        self.classifier = nn.Dense(c.num_classes)

    def tokens(self, x: Array) -> tuple[Array, list[Array]]:
        """Normalised images [B, S, S, 3] -> (embeddings, outputs of every block).

        Both are [B, 1 + (S/p)^2, D], token 0 being the class token; block outputs
        are before the final LayerNorm.
        """
        c = self.config
        if x.ndim != 4 or x.shape[1:] != (c.image_size, c.image_size, 3):
            # Position embeddings exist for one grid only; interpolating them would
            # change the model, so refuse rather than guess.
            raise ValueError(
                f"expected images [B, {c.image_size}, {c.image_size}, 3], got {x.shape}: "
                f"this ViT has position embeddings for {c.image_size}px inputs only "
                "(no interpolation); resize the images first")
        patches = self.patch_embed(x)  # [B, S/p, S/p, D]
        b = patches.shape[0]
        # Row-major flatten = torch's flatten(2) of NCHW [B, D, h, w].
        patches = patches.reshape(b, -1, c.hidden_size)
        cls = jnp.broadcast_to(self.cls_token, (b, 1, c.hidden_size)).astype(patches.dtype)
        h = jnp.concatenate([cls, patches], axis=1) + self.pos_embed
        outs = []
        y = h
        for blk in self.blocks:
            y = blk(y)
            outs.append(y)
        return h, outs

    def pool(self, outs: list[Array]) -> Array:
        """Block outputs (from ``tokens``) -> features: final-LN class token [B, D]."""
        return self.norm(outs[-1][:, 0])

    def features(self, x: Array) -> Array:
        """Normalised images [B, S, S, 3] -> features [B, D'] (``pool`` of the blocks)."""
        return self.pool(self.tokens(x)[1])

    def head(self, z: Array) -> Array:
        """Features [B, D] -> logits [B, C]."""
        return self.classifier(z)

    def __call__(self, x: Array) -> tuple[Array, dict[str, Array]]:
        """Normalised images [B, S, S, 3] -> (logits [B, C], named intermediates).

        ``acts``: ``embeddings`` and ``block_i`` ([B, N, D]), ``features`` [B, D'].
        """
        emb, outs = self.tokens(x)
        z = self.pool(outs)
        acts = {"embeddings": emb, **{f"block_{i}": o for i, o in enumerate(outs)},
                "features": z}
        return self.head(z), acts


def build_vit_family(family: str, expected: str, config_cls, module_cls,
                     config: dict[str, Any]) -> Classifier:
    """A ViT-shaped classifier (``vit``, ``dino_vit``) from a JSON config dict; the
    config class gives ``feature_dim`` (or ``hidden_size``) and pixel statistics."""
    if family != expected:
        raise ValueError(f"{module_cls.__module__} builds family {expected!r}, not {family!r}")
    cfg = config_cls(**config)
    return Classifier(family=family, module=module_cls(cfg), config=cfg,
                      image_size=cfg.image_size,
                      feature_dim=getattr(cfg, "feature_dim", cfg.hidden_size),
                      num_classes=cfg.num_classes, mean=cfg.mean, std=cfg.std)


def build(family: str, config: dict[str, Any]) -> Classifier:
    """Builds the ``vit`` family classifier from a JSON config dict."""
    return build_vit_family(family, FAMILY, ViTConfig, VisionTransformer, config)


def random_variables(model: Classifier, seed: int = 0) -> dict:
    """Random numpy variables with the model's exact tree, without running ``init``.

    Shapes come from ``jax.eval_shape`` (no compute); values from a local numpy
    generator: LayerNorm scales ~1, biases and embeddings small, kernels with
    1/sqrt(fan_in) scale, so activations stay O(1). For tests and benchmarks only.
    """
    rng = np.random.default_rng(seed)
    abstract = abstract_variables(model)

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        shape = leaf.shape
        if name == "scale":
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape) / np.sqrt(fan_in)
        else:  # biases, class token, position embeddings
            value = 0.02 * rng.standard_normal(shape)
        return value.astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, abstract)
