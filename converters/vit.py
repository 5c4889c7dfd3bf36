"""torchvision / Hugging Face / DINO ViT checkpoints -> ``vit`` and ``dino_vit`` Flax.

The entry point of the ViT converters: :func:`detect_layout` tells the layouts apart
from the state-dict keys; each layout's converter (and its torch key -> Flax path
table) lives in its own module and is re-exported here:

* ``torchvision-vit``: :func:`convert_torchvision_vit`
  (:mod:`texter_jax.converters.vit_torchvision`), ``torchvision.models.VisionTransformer``
  state dicts (``conv_proj``, ``class_token``, ``encoder.pos_embedding``,
  ``encoder.layers.encoder_layer_N.*``, ``heads.head``).
* ``hf-vit``: :func:`convert_hf_vit` (:mod:`texter_jax.converters.vit_hf`),
  ``ViTForImageClassification`` in both the on-disk (``vit.encoder.layer.N.*``) and
  the transformers-5 in-memory (``vit.layers.N.*``) namings.
* ``dino-vit``: :func:`convert_dino_vit` (:mod:`texter_jax.converters.vit_dino`),
  facebookresearch/dino backbones (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
  ``blocks.N.*``, ``norm``) plus the separately trained ``eval_linear`` head.

Rule builders and shape readers shared by the three: :mod:`texter_jax.converters.vit_rules`.
"""

from __future__ import annotations

from texter_jax.converters.vit_dino import convert_dino_vit
from texter_jax.converters.vit_hf import convert_hf_vit
from texter_jax.converters.vit_rules import strip_prefixes
from texter_jax.converters.vit_torchvision import convert_torchvision_vit

__all__ = ["convert_dino_vit", "convert_hf_vit", "convert_torchvision_vit", "detect_layout"]


def detect_layout(keys) -> str | None:
    """``"torchvision-vit"``, ``"hf-vit"``, ``"dino-vit"`` or None for other keys."""
    keys = set(keys)
    if "conv_proj.weight" in keys and "encoder.pos_embedding" in keys:
        return "torchvision-vit"
    if "vit.embeddings.patch_embeddings.projection.weight" in keys:
        return "hf-vit"
    stripped = set(strip_prefixes(dict.fromkeys(keys), ("module.", "backbone.")))
    if {"cls_token", "pos_embed", "patch_embed.proj.weight"} <= stripped:
        return "dino-vit"
    return None
