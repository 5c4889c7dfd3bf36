"""Architecture of texter_jax's ViT CLIP: :class:`ClipConfig` and the MLP activations.

:data:`ACTIVATIONS` holds the HF ``hidden_act`` names reproduced exactly (OpenAI's
:func:`quick_gelu` among them); :data:`TEXT_POOLING` the ways a text row is pooled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from texter_jax.types import Array

TEXT_POOLING = ("argmax", "eos")


def quick_gelu(x: Array) -> Array:
    """OpenAI CLIP's sigmoid approximation of GELU: ``x * sigmoid(1.702 x)``."""
    return x * jax.nn.sigmoid(1.702 * x)


# HF `hidden_act` names we reproduce exactly; anything else is refused at build time.
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "quick_gelu": quick_gelu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClipConfig:
    """Architecture of a ViT CLIP model. Defaults are OpenAI CLIP ViT-B/16.

    Attributes:
      image_size: side S of the square input image (224).
      patch_size: side of the square patches (16); ``image_size % patch_size == 0``.
      vision_width: hidden size of the image transformer (768).
      vision_layers: number of image transformer blocks (12).
      vision_heads: attention heads of the image transformer (12).
      vision_mlp: hidden size of the image MLPs (3072).
      vocab_size: number of token ids (49408).
      context_length: maximum token sequence length L (77).
      text_width: hidden size of the text transformer (512).
      text_layers: number of text transformer blocks (12).
      text_heads: attention heads of the text transformer (8).
      text_mlp: hidden size of the text MLPs (2048).
      eos_token_id: id of ``<|endoftext|>`` (49407); used when ``text_pooling == "eos"``.
      text_pooling: which token's state becomes the text embedding. ``"argmax"``: the
        position of the largest id in each row (OpenAI CLIP, and HF configs whose
        ``eos_token_id`` is the legacy value 2; the EOT token has the largest id).
        ``"eos"``: the first position equal to ``eos_token_id`` (HF with a correct
        ``eos_token_id``).
      embed_dim: E, the size of the joint embedding (512).
      activation: MLP activation, a key of :data:`ACTIVATIONS` (``"quick_gelu"``).
      layer_norm_eps: epsilon of every LayerNorm (1e-5).
    """

    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_mlp: int = 3072
    vocab_size: int = 49408
    context_length: int = 77
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    text_mlp: int = 2048
    eos_token_id: int = 49407
    text_pooling: str = "argmax"
    embed_dim: int = 512
    activation: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of "
                             f"patch_size {self.patch_size}")
        if self.vision_width % self.vision_heads or self.text_width % self.text_heads:
            raise ValueError("vision_width / text_width must be multiples of their head counts")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} not supported; "
                             f"supported: {', '.join(ACTIVATIONS)}")
        if self.text_pooling not in TEXT_POOLING:
            raise ValueError(f"text_pooling {self.text_pooling!r} not in {TEXT_POOLING}")

