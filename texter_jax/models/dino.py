"""DINO ViT backbones (Caron et al. 2021, arXiv 2104.14294) with a linear-probe head.

The DINO ViT (facebookresearch/dino ``vision_transformer.py``) is the same pre-LN ViT
as :mod:`texter_jax.models.vit` (LayerNorm eps 1e-6, qkv with bias, exact GELU); what
differs is the feature the linear head reads. DINO's ``eval_linear.py`` feeds its
``LinearClassifier`` with the class tokens of the last ``n_last_blocks`` blocks, each
passed through the final ``norm``, concatenated (ViT-S: n = 4, so 4 * 384 = 1536-d
for ViT-S/8, the TEXTER release's DINO ViT). With ``avgpool_patchtokens`` (DINO's
ViT-B setting, n = 1) the class token is interleaved with the mean normed patch token.

Parameters use the ViT tree (``classifier`` holds the separately trained linear head).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from texter_jax.classifier import Classifier
from texter_jax.models.vit import VisionTransformer, ViTConfig, build_vit_family
from texter_jax.types import Array

FAMILY = "dino_vit"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DinoViTConfig(ViTConfig):
    """A DINO ViT plus linear probe (defaults: ViT-S/8 at 224, ImageNet-1k head).

    Attributes:
      image_size, patch_size, hidden_size, depth, num_heads, mlp_dim, num_classes,
        layer_norm_eps, qkv_bias, mean, std: as in :class:`texter_jax.models.vit.ViTConfig`
        (whose checks apply), with ViT-S/8's sizes as defaults.
      n_last_blocks: how many final blocks' class tokens the head reads.
      avgpool_patchtokens: also use the mean patch token of the last block (DINO only
        supports this with ``n_last_blocks == 1``).
    """

    patch_size: int = 8
    hidden_size: int = 384
    num_heads: int = 6
    mlp_dim: int = 1536
    n_last_blocks: int = 4
    avgpool_patchtokens: bool = False

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.n_last_blocks <= self.depth:
            raise ValueError(f"n_last_blocks must be in [1, depth={self.depth}], "
                             f"got {self.n_last_blocks}")
        if self.avgpool_patchtokens and self.n_last_blocks != 1:
            # DINO's eval_linear concatenates along a new last axis, which only
            # type-checks for one block; follow it rather than invent a layout.
            raise ValueError("avgpool_patchtokens needs n_last_blocks == 1 (as in DINO)")

    @property
    def feature_dim(self) -> int:
        return self.hidden_size * (self.n_last_blocks + int(self.avgpool_patchtokens))


class DinoVisionTransformer(VisionTransformer):
    """DINO ViT on *normalised* NHWC images; ``features`` -> [B, feature_dim]."""

    def pool(self, outs: list[Array]) -> Array:
        """Block outputs -> normed class tokens of the last n blocks, concatenated."""
        c = self.config
        normed = [self.norm(o) for o in outs[-c.n_last_blocks:]]
        z = jnp.concatenate([t[:, 0] for t in normed], axis=-1)
        if c.avgpool_patchtokens:
            avg = jnp.mean(normed[-1][:, 1:], axis=1)
            # DINO stacks [cls, avg] on a last axis, then flattens: interleaved.
            z = jnp.stack([z, avg], axis=-1).reshape(z.shape[0], -1)
        return z


def build(family: str, config: dict[str, Any]) -> Classifier:
    """Builds the ``dino_vit`` family classifier from a JSON config dict."""
    return build_vit_family(family, FAMILY, DinoViTConfig, DinoVisionTransformer, config)
