"""CLIP (ViT image tower + causal text tower) for TEXTER's joint space: the :class:`Clip` model.

TEXTER maps classifier features into CLIP *image* space and ranks concept texts by their
CLIP *text* embeddings (TEXTER_SPEC "Stage 3"). This model reproduces the Hugging Face
``CLIPModel`` / OpenAI ``clip`` ViT models exactly (fp32 parity <= 1e-4), so converted
checkpoints give the same embeddings as the upstream code.

This module holds the :class:`Clip` wrapper and the registry entry :func:`build`, and
re-exports the rest: the architecture (:mod:`texter_jax.models.clip_config`), the Flax
modules and their parameter tree (:mod:`texter_jax.models.clip_modules`) and the image
preprocessing (:mod:`texter_jax.models.clip_preprocess`).

References:
  Radford et al., "Learning Transferable Visual Models From Natural Language
  Supervision", ICML 2021, https://arxiv.org/abs/2103.00020
"""

from __future__ import annotations

import dataclasses

from texter_jax.models.clip_config import ACTIVATIONS, TEXT_POOLING, ClipConfig, quick_gelu
from texter_jax.models.clip_modules import ClipModule, TextTower, VisionTower
from texter_jax.models.clip_preprocess import preprocess_images
from texter_jax.models.registry import config_from_dict
from texter_jax.models.two_tower import TwoTowerModel
from texter_jax.types import Array

__all__ = [
    "ACTIVATIONS", "CLIP_MEAN", "CLIP_STD", "Clip", "ClipConfig", "ClipModule", "FAMILY",
    "TEXT_POOLING", "TextTower", "VisionTower", "build", "preprocess_images", "quick_gelu",
]

FAMILY = "clip"
# OpenAI CLIP's pixel statistics (its preprocessing, also in HF CLIPImageProcessor).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class Clip(TwoTowerModel):
    """A CLIP model as pure functions of its variables (interface: :class:`TwoTowerModel`).

    :meth:`encode_image` equals HF ``get_image_features(...).pooler_output`` (resize
    images with :func:`preprocess_images` first); :meth:`encode_text`, on token ids from
    :class:`texter_jax.text.ClipTokenizer` (``<|startoftext|>`` ... ``<|endoftext|>``
    then padding), equals HF ``get_text_features(...).pooler_output``.

    Attributes:
      module: the :class:`ClipModule`.
      config: the :class:`ClipConfig` it was built from.
      family: registry name, always ``"clip"``.
      mean, std: pixel statistics applied inside :meth:`encode_image`.
    """

    module: ClipModule
    config: ClipConfig
    family: str = FAMILY
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    _display_name = "CLIP"

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def _image_shape_error(self, images: Array) -> str:
        return (super()._image_shape_error(images)
                + f"; use preprocess_images(images, {self.image_size})")


def build(family: str, config: dict) -> Clip:
    """Builds a :class:`Clip` from its JSON config dict (see :class:`ClipConfig`)."""
    if family != FAMILY:
        raise ValueError(f"texter_jax.models.clip builds family {FAMILY!r}, not {family!r}")
    cfg = config_from_dict(ClipConfig, config)
    return Clip(module=ClipModule(cfg), config=cfg)
