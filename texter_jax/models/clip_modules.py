"""Flax Linen modules of texter_jax's ViT CLIP: the two towers and :class:`ClipModule`.

Reproduces the Hugging Face ``CLIPModel`` / OpenAI ``clip`` ViT models exactly (fp32
parity <= 1e-4). Parameter tree (``variables["params"]``), named after the HF modules so
that the converter tables in ``converters/clip_hf.py`` and ``converters/clip_openai.py``
read one-to-one::

    vision_model/{patch_embedding/kernel, class_embedding, position_embedding,
                  pre_layrnorm, layers_N/{layer_norm1, self_attn/{q,k,v,out}_proj,
                  layer_norm2, mlp/{fc1, fc2}}, post_layernorm}
    text_model/{token_embedding/embedding, position_embedding, layers_N/..., final_layer_norm}
    visual_projection/kernel, text_projection/kernel, logit_scale
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from texter_jax.models.clip_config import ACTIVATIONS, ClipConfig
from texter_jax.types import Array


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
        def split(y):
            return y.reshape(b, t, self.heads, hd)
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
