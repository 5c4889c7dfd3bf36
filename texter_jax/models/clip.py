"""CLIP (ViT image tower + causal text tower) in Flax Linen, for TEXTER's joint space.

TEXTER maps classifier features into CLIP *image* space and ranks concept texts by their
CLIP *text* embeddings (TEXTER_SPEC "Stage 3"). This module reproduces the Hugging Face
``CLIPModel`` / OpenAI ``clip`` ViT models exactly (fp32 parity <= 1e-4), so converted
checkpoints give the same embeddings as the upstream code.

Parameter tree (``variables["params"]``), named after the HF modules so that the
converter tables in ``converters/clip.py`` read one-to-one::

    vision_model/{patch_embedding/kernel, class_embedding, position_embedding,
                  pre_layrnorm, layers_N/{layer_norm1, self_attn/{q,k,v,out}_proj,
                  layer_norm2, mlp/{fc1, fc2}}, post_layernorm}
    text_model/{token_embedding/embedding, position_embedding, layers_N/..., final_layer_norm}
    visual_projection/kernel, text_projection/kernel, logit_scale

References:
  Radford et al., "Learning Transferable Visual Models From Natural Language
  Supervision", ICML 2021, https://arxiv.org/abs/2103.00020
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import chex
import jax
import jax.numpy as jnp
from flax import linen as nn

from texter_jax.classifier import normalize_images
from texter_jax.models.registry import config_from_dict
from texter_jax.types import Array, Variables

FAMILY = "clip"
# OpenAI CLIP's pixel statistics (its preprocessing, also in HF CLIPImageProcessor).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

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


def _layer_norm(eps: float, name: str | None = None) -> nn.LayerNorm:
    # Two-pass variance, as torch computes it; the fast E[x^2]-E[x]^2 form costs precision.
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class _SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (all with bias)."""

    width: int
    heads: int

    def setup(self):
        self.q_proj = nn.Dense(self.width)
        self.k_proj = nn.Dense(self.width)
        self.v_proj = nn.Dense(self.width)
        self.out_proj = nn.Dense(self.width)

    def __call__(self, x: Array, causal: bool) -> Array:
        """x [B, T, W] -> [B, T, W]; ``causal`` hides later positions from earlier ones."""
        b, t, _ = x.shape
        hd = self.width // self.heads
        split = lambda y: y.reshape(b, t, self.heads, hd)
        q = split(self.q_proj(x))
        k = split(self.k_proj(x))
        v = split(self.v_proj(x))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (hd ** -0.5)
        if causal:
            mask = jnp.tril(jnp.ones((t, t), bool))
            logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, self.width)
        return self.out_proj(out)


class _Mlp(nn.Module):
    width: int
    hidden: int
    activation: str

    def setup(self):
        self.fc1 = nn.Dense(self.hidden)
        self.fc2 = nn.Dense(self.width)

    def __call__(self, x: Array) -> Array:
        return self.fc2(ACTIVATIONS[self.activation](self.fc1(x)))


class _Block(nn.Module):
    """Pre-LayerNorm residual block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    width: int
    heads: int
    mlp_dim: int
    activation: str
    eps: float

    def setup(self):
        self.layer_norm1 = _layer_norm(self.eps)
        self.self_attn = _SelfAttention(self.width, self.heads)
        self.layer_norm2 = _layer_norm(self.eps)
        self.mlp = _Mlp(self.width, self.mlp_dim, self.activation)

    def __call__(self, x: Array, causal: bool) -> Array:
        x = x + self.self_attn(self.layer_norm1(x), causal)
        return x + self.mlp(self.layer_norm2(x))


class VisionTower(nn.Module):
    """CLIP ViT: patches + CLS + positions -> pre-LN -> blocks -> post-LN on CLS."""

    config: ClipConfig

    def setup(self):
        c = self.config
        n_pos = (c.image_size // c.patch_size) ** 2 + 1
        init = nn.initializers.normal(c.vision_width ** -0.5)
        self.patch_embedding = nn.Conv(
            c.vision_width, (c.patch_size, c.patch_size), strides=c.patch_size,
            padding="VALID", use_bias=False)
        self.class_embedding = self.param("class_embedding", init, (c.vision_width,))
        self.position_embedding = self.param("position_embedding", init, (n_pos, c.vision_width))
        self.pre_layrnorm = _layer_norm(c.layer_norm_eps)  # [sic], the HF/OpenAI name
        self.layers = [
            _Block(c.vision_width, c.vision_heads, c.vision_mlp, c.activation, c.layer_norm_eps)
            for _ in range(c.vision_layers)]
        self.post_layernorm = _layer_norm(c.layer_norm_eps)

    def __call__(self, x: Array) -> Array:
        """Normalised images [B, S, S, 3] -> pooled CLS state [B, vision_width]."""
        b = x.shape[0]
        patches = self.patch_embedding(x)  # [B, S/p, S/p, W]
        patches = patches.reshape(b, -1, patches.shape[-1])  # row-major, as torch flatten(2)
        cls = jnp.broadcast_to(self.class_embedding, (b, 1, patches.shape[-1]))
        h = jnp.concatenate([cls.astype(patches.dtype), patches], axis=1)
        h = self.pre_layrnorm(h + self.position_embedding)
        for layer in self.layers:
            h = layer(h, causal=False)
        return self.post_layernorm(h[:, 0])


class TextTower(nn.Module):
    """CLIP text transformer: tokens + positions -> causal blocks -> final LN -> pool."""

    config: ClipConfig

    def setup(self):
        c = self.config
        self.token_embedding = nn.Embed(c.vocab_size, c.text_width,
                                        embedding_init=nn.initializers.normal(0.02))
        self.position_embedding = self.param(
            "position_embedding", nn.initializers.normal(0.01), (c.context_length, c.text_width))
        self.layers = [
            _Block(c.text_width, c.text_heads, c.text_mlp, c.activation, c.layer_norm_eps)
            for _ in range(c.text_layers)]
        self.final_layer_norm = _layer_norm(c.layer_norm_eps)

    def __call__(self, token_ids: Array) -> Array:
        """Token ids int [B, L], L <= context_length -> pooled state [B, text_width]."""
        c = self.config
        length = token_ids.shape[1]
        h = self.token_embedding(token_ids) + self.position_embedding[:length]
        for layer in self.layers:
            h = layer(h, causal=True)
        h = self.final_layer_norm(h)
        if c.text_pooling == "argmax":
            pos = jnp.argmax(token_ids, axis=-1)  # first maximum, as torch.argmax
        else:
            pos = jnp.argmax(token_ids == c.eos_token_id, axis=-1)  # first EOS (0 if none)
        return jnp.take_along_axis(h, pos[:, None, None], axis=1)[:, 0]


class ClipModule(nn.Module):
    """Both towers, their bias-free projections and the learned log logit scale."""

    config: ClipConfig

    def setup(self):
        c = self.config
        self.vision_model = VisionTower(c)
        self.text_model = TextTower(c)
        self.visual_projection = nn.Dense(c.embed_dim, use_bias=False)
        self.text_projection = nn.Dense(c.embed_dim, use_bias=False)
        # CLIP initialises the log scale at log(1 / 0.07); stored as a 0-d array.
        self.logit_scale = self.param(
            "logit_scale", nn.initializers.constant(math.log(1 / 0.07)), ())

    def encode_image(self, images_normalized: Array) -> Array:
        """Normalised images [B, S, S, 3] -> image embeddings [B, E] (not L2-normalised)."""
        return self.visual_projection(self.vision_model(images_normalized))

    def encode_text(self, token_ids: Array) -> Array:
        """Token ids int32 [B, L] -> text embeddings [B, E] (not L2-normalised)."""
        return self.text_projection(self.text_model(token_ids))

    def __call__(self, images_normalized: Array, token_ids: Array):
        """Touches every parameter (for ``init``).

        Returns:
          ``(image_embeds [B, E], text_embeds [B', E], logit_scale [])``; the last is the
          stored *log* scale.
        """
        return (self.encode_image(images_normalized), self.encode_text(token_ids),
                self.logit_scale)


@dataclasses.dataclass(frozen=True)
class Clip:
    """A CLIP model as pure functions of its variables.

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

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def context_length(self) -> int:
        return self.config.context_length

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def normalize(self, images: Array) -> Array:
        """Images float [B, H, W, 3] in [0, 1] -> CLIP-normalised images, same shape."""
        return normalize_images(images, self.mean, self.std)

    def encode_image(self, variables: Variables, images: Array) -> Array:
        """Image embeddings, projected but NOT L2-normalised.

        Args:
          variables: ``{"params": ...}`` of this model.
          images: float32 [B, S, S, 3], NHWC, in [0, 1], S = ``image_size`` (resize with
            :func:`preprocess_images` first).

        Returns:
          float32 [B, E], equal to HF ``get_image_features(...).pooler_output``.
        """
        chex.assert_rank(images, 4)
        s = self.image_size
        if tuple(images.shape[1:]) != (s, s, 3):
            raise ValueError(f"CLIP expects images [B, {s}, {s}, 3] in [0, 1], got "
                             f"{tuple(images.shape)}; use preprocess_images(images, {s})")
        return self.module.apply(variables, self.normalize(images), method="encode_image")

    def encode_text(self, variables: Variables, token_ids: Array) -> Array:
        """Text embeddings, projected but NOT L2-normalised.

        Args:
          variables: ``{"params": ...}`` of this model.
          token_ids: int32 [B, L], L <= ``context_length``, as produced by
            :class:`texter_jax.text.ClipTokenizer` (``<|startoftext|>`` ... ``<|endoftext|>``
            then padding). Ids must be < ``vocab_size``.

        Returns:
          float32 [B, E], equal to HF ``get_text_features(...).pooler_output``.
        """
        chex.assert_rank(token_ids, 2)
        if token_ids.shape[1] > self.context_length:
            raise ValueError(f"token sequences of length {token_ids.shape[1]} exceed the "
                             f"context length {self.context_length}")
        return self.module.apply(variables, jnp.asarray(token_ids, jnp.int32),
                                 method="encode_text")

    def logit_scale(self, variables: Variables) -> Array:
        """The multiplier of cosine similarities in CLIP logits: ``exp(logit_scale)``, []."""
        return jnp.exp(variables["params"]["logit_scale"])

    def dummy_inputs(self) -> tuple[Array, Array]:
        """Inputs for ``module.init``: one normalised image and one token row."""
        s = self.image_size
        return (jnp.zeros((1, s, s, 3), jnp.float32),
                jnp.zeros((1, self.context_length), jnp.int32))


def _resized_size(h: int, w: int, size: int) -> tuple[int, int]:
    """Shortest side -> ``size``, the other scaled and truncated (torchvision Resize(int))."""
    if w <= h:
        return int(size * h / w), size
    return size, int(size * w / h)


def preprocess_images(images: Array, size: int) -> Array:
    """CLIP preprocessing in JAX: resize shortest side to ``size`` (bicubic), centre crop.

    Follows OpenAI CLIP's torchvision pipeline (``Resize(size, BICUBIC)`` then
    ``CenterCrop(size)``, crop offsets rounded as torchvision does). It *approximates*
    PIL's bicubic: ``jax.image.resize`` uses the same Keys kernel (a = -0.5) with
    antialiasing when shrinking, but works in float and does not round to uint8, so
    pixels differ from PIL's by up to about one grey level. Values are clipped back to
    [0, 1] because bicubic overshoots.

    Args:
      images: float32 [B, H, W, 3], NHWC, in [0, 1] (one size for the whole batch).
      size: output side S (the model's ``image_size``).

    Returns:
      float32 [B, S, S, 3] in [0, 1].
    """
    chex.assert_rank(images, 4)
    b, h, w, ch = images.shape
    new_h, new_w = _resized_size(h, w, size)
    if (new_h, new_w) != (h, w):
        images = jax.image.resize(images, (b, new_h, new_w, ch), method="bicubic",
                                  antialias=True)
        images = jnp.clip(images, 0.0, 1.0)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return images[:, top:top + size, left:left + size, :]


def build(family: str, config: dict) -> Clip:
    """Builds a :class:`Clip` from its JSON config dict (see :class:`ClipConfig`)."""
    if family != FAMILY:
        raise ValueError(f"texter_jax.models.clip builds family {FAMILY!r}, not {family!r}")
    cfg = config_from_dict(ClipConfig, config)
    return Clip(module=ClipModule(cfg), config=cfg)
