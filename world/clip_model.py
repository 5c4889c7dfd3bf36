"""A small CLIP for the procedural world: a CNN image tower and a bag-of-words text tower.

Same pure interface as :class:`texter_jax.models.clip.Clip` (both derive from
:class:`texter_jax.models.two_tower.TwoTowerModel`: ``encode_image``, ``encode_text``,
``logit_scale``, ``dummy_inputs``, ``image_size``, ``embed_dim``, ``context_length``;
each defines ``vocab_size``), plus ``tokenize(texts)`` on the world's word-level
tokenizer, whose vocabulary is stored in the config so a saved model rebuilds it.

* Image tower: two stride-2 3x3 convs as stem, then residual stages (3x3 convs, ReLU,
  no normalisation: small and fast on CPU, nothing to keep in ``batch_stats``), mean and
  max pooling; beside it a shallow *texture branch* (two stride-2 3x3 convs, pooled);
  both pooled vectors feed a 2-layer MLP projection. Why two branches: colour, pattern
  and background are local statistics, shape and size are global form. With one deep
  branch, whichever kind the training learns first blocks the other (measured: shape
  learned first left pattern at 0.46 zero-shot after 700 steps; texture first left
  shape at 0.42); with the shallow branch beside it, all five reach >= 0.98.
* Text tower: word embeddings mean-pooled over non-padding tokens, then a 2-layer MLP.
  Word order carries nothing in this world (every attribute value is its own word), and
  a trial found mean pooling better than a tiny transformer at equal steps
  (WORLD_NOTES).

References:
  Radford et al., "Learning Transferable Visual Models From Natural Language
  Supervision", ICML 2021, https://arxiv.org/abs/2103.00020
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn

from texter_jax.models.registry import config_from_dict, register_family
from texter_jax.models.two_tower import TwoTowerModel
from texter_jax.types import Array
from texter_jax.world.captions import WorldTokenizer, world_vocab

FAMILY = "world_clip"
register_family(FAMILY, __name__)  # a world family, not one of the core registry's
# The world's pixels average ~0.5 with spread ~0.25 per channel; any fixed affine map
# works, this one keeps first-layer inputs near unit scale.
WORLD_MEAN = (0.5, 0.5, 0.5)
WORLD_STD = (0.25, 0.25, 0.25)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorldClipConfig:
    """Architecture of the world's CLIP.

    Attributes:
      image_size: side S of the square input (64; 96 also works).
      stem_widths: channels of the two stride-2 stem convs.
      widths: channels of the residual stages.
      strides: stride of each stage's first conv (same length as ``widths``).
      image_hidden: hidden width of the image projection MLP.
      vocab: the tokenizer's words (id = position; ``<pad>``, ``<unk>`` first).
      context_length: L, tokens per text.
      word_dim: word-embedding width.
      text_hidden: hidden width of the text MLP.
      embed_dim: E, the joint embedding width.
      texture_width: channels of a shallow second image branch (two stride-2 3x3 convs,
        pooled), 0 for none.
    """

    image_size: int = 64
    stem_widths: tuple[int, int] = (16, 32)
    widths: tuple[int, ...] = (48, 96, 128)
    strides: tuple[int, ...] = (2, 2, 1)
    image_hidden: int = 256
    vocab: tuple[str, ...] = dataclasses.field(default_factory=world_vocab)
    context_length: int = 24
    word_dim: int = 64
    text_hidden: int = 128
    embed_dim: int = 64
    texture_width: int = 32

    def __post_init__(self):
        # JSON round trips give lists; keep the dataclass hashable.
        for name in ("stem_widths", "widths", "strides", "vocab"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.stem_widths) != 2 or not self.widths or len(self.strides) != len(self.widths):
            raise ValueError("WorldClipConfig: need 2 stem widths, >= 1 stage width and one "
                             "stride per stage")
        if self.image_size < 16:
            raise ValueError(f"WorldClipConfig.image_size must be >= 16, got {self.image_size}")


class _ResBlock(nn.Module):
    """conv3x3(stride) -> ReLU -> conv3x3, plus (projected) input, then ReLU."""

    width: int
    stride: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        s = (self.stride, self.stride)
        y = nn.relu(nn.Conv(self.width, (3, 3), strides=s, name="conv1")(x))
        y = nn.Conv(self.width, (3, 3), name="conv2")(y)
        if self.stride != 1 or x.shape[-1] != self.width:
            x = nn.Conv(self.width, (1, 1), strides=s, name="shortcut")(x)
        return nn.relu(y + x)


class ImageTower(nn.Module):
    """Normalised images [B, S, S, 3] -> image embeddings [B, E] (not normalised)."""

    config: WorldClipConfig

    @nn.compact
    def __call__(self, images: Array) -> Array:
        c = self.config
        x = images
        for i, w in enumerate(c.stem_widths):
            x = nn.relu(nn.Conv(w, (3, 3), strides=(2, 2), name=f"stem{i}")(x))
        for i, (w, st) in enumerate(zip(c.widths, c.strides, strict=True)):
            x = _ResBlock(w, st, name=f"stage{i}")(x)
        # Max pooling keeps "is there a spike / a hole somewhere" evidence that a mean
        # over a mostly-background map would wash out.
        pooled = [jnp.mean(x, axis=(1, 2)), jnp.max(x, axis=(1, 2))]
        if c.texture_width:
            t = nn.relu(nn.Conv(c.texture_width // 2, (3, 3), strides=(2, 2),
                                name="texture0")(images))
            t = nn.relu(nn.Conv(c.texture_width, (3, 3), strides=(2, 2), name="texture1")(t))
            pooled += [jnp.mean(t, axis=(1, 2)), jnp.max(t, axis=(1, 2))]
        h = jnp.concatenate(pooled, axis=-1)
        h = nn.relu(nn.Dense(c.image_hidden, name="proj1")(h))
        return nn.Dense(c.embed_dim, name="proj2")(h)


class TextTower(nn.Module):
    """Token ids int32 [B, L] (0 = padding) -> text embeddings [B, E] (not normalised)."""

    config: WorldClipConfig

    @nn.compact
    def __call__(self, token_ids: Array) -> Array:
        c = self.config
        e = nn.Embed(len(c.vocab), c.word_dim, name="embed")(token_ids)
        mask = (token_ids != 0).astype(e.dtype)[..., None]
        # Mean over real tokens; an all-padding row gives the zero vector, not NaN.
        h = jnp.sum(e * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
        h = nn.relu(nn.Dense(c.text_hidden, name="mlp1")(h))
        return nn.Dense(c.embed_dim, name="mlp2")(h)


class WorldClipModule(nn.Module):
    """Both towers and the learned log logit scale."""

    config: WorldClipConfig

    def setup(self):
        self.image_tower = ImageTower(self.config)
        self.text_tower = TextTower(self.config)
        # CLIP's initial temperature 0.07, stored as a log scale (a 0-d array).
        self.logit_scale = self.param(
            "logit_scale", nn.initializers.constant(math.log(1 / 0.07)), ())

    def encode_image(self, images_normalized: Array) -> Array:
        return self.image_tower(images_normalized)

    def encode_text(self, token_ids: Array) -> Array:
        return self.text_tower(token_ids)

    def __call__(self, images_normalized: Array, token_ids: Array):
        """Touches every parameter (for ``init``): (image [B, E], text [B', E], log scale)."""
        return self.encode_image(images_normalized), self.encode_text(token_ids), self.logit_scale


@dataclasses.dataclass(frozen=True)
class WorldClip(TwoTowerModel):
    """The world's CLIP as pure functions of its variables (interface: :class:`TwoTowerModel`).

    :meth:`encode_text` takes token ids from :meth:`tokenize`.

    Attributes:
      module: the :class:`WorldClipModule`.
      config: the :class:`WorldClipConfig` it was built from.
      family: registry name, ``"world_clip"``.
      mean, std: pixel statistics applied inside :meth:`encode_image`.
    """

    module: WorldClipModule
    config: WorldClipConfig
    family: str = FAMILY
    mean: tuple[float, float, float] = WORLD_MEAN
    std: tuple[float, float, float] = WORLD_STD

    _display_name = "world CLIP"

    @property
    def vocab_size(self) -> int:
        return len(self.config.vocab)

    @property
    def tokenizer(self) -> WorldTokenizer:
        return WorldTokenizer(self.config.vocab, self.config.context_length)

    def tokenize(self, texts: Sequence[str]):
        """Texts -> int32 [N, context_length] world token ids (numpy)."""
        return self.tokenizer(texts)


def make_world_clip(config: WorldClipConfig | None = None) -> WorldClip:
    config = config or WorldClipConfig()
    return WorldClip(module=WorldClipModule(config), config=config)


def build(family: str, config: dict) -> WorldClip:
    """Registry entry point: ``("world_clip", config_dict) -> WorldClip``."""
    if family != FAMILY:
        raise ValueError(f"texter_jax.world.clip_model builds {FAMILY!r}, not {family!r}")
    return make_world_clip(config_from_dict(WorldClipConfig, config))
