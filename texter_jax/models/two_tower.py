"""The pure-function wrapper shared by the CLIP-style (image tower + text tower) models.

:class:`TwoTowerModel` is the base of :class:`texter_jax.models.clip.Clip` and
:class:`texter_jax.world.clip_model.WorldClip`: the interface TEXTER's joint space uses
(``encode_image``, ``encode_text``, ``logit_scale``, ``dummy_inputs``, ``normalize``,
``image_size``, ``embed_dim``, ``context_length``).
"""

from __future__ import annotations

from typing import Any

import chex
import jax.numpy as jnp

from texter_jax.classifier import normalize_images
from texter_jax.types import Array, Variables


class TwoTowerModel:
    """A CLIP-style model as pure functions of its variables.

    Base of frozen dataclasses with the fields ``module`` (a Flax module with methods
    ``encode_image(images_normalized)`` and ``encode_text(token_ids)`` and a 0-d
    ``logit_scale`` parameter holding the *log* scale), ``config`` (with ``image_size``,
    ``embed_dim`` and ``context_length``), ``family`` (registry name) and ``mean``/``std``
    (pixel statistics applied inside :meth:`encode_image`). Subclasses define
    ``vocab_size`` and name themselves in errors with ``_display_name``.
    """

    module: Any
    config: Any
    family: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    _display_name = "CLIP"

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def normalize(self, images: Array) -> Array:
        """Images float [B, H, W, 3] in [0, 1] -> normalised images, same shape."""
        return normalize_images(images, self.mean, self.std)

    def _image_shape_error(self, images: Array) -> str:
        """The message for images that are not [B, S, S, 3]; subclasses may add a hint."""
        s = self.image_size
        return (f"{self._display_name} expects images [B, {s}, {s}, 3] in [0, 1], got "
                f"{tuple(images.shape)}")

    def encode_image(self, variables: Variables, images: Array) -> Array:
        """Image embeddings, projected but NOT L2-normalised.

        Args:
          variables: ``{"params": ...}`` of this model.
          images: float32 [B, S, S, 3], NHWC, in [0, 1], S = ``image_size``.

        Returns:
          float32 [B, E].
        """
        chex.assert_rank(images, 4)
        s = self.image_size
        if tuple(images.shape[1:]) != (s, s, 3):
            raise ValueError(self._image_shape_error(images))
        return self.module.apply(variables, self.normalize(images), method="encode_image")

    def encode_text(self, variables: Variables, token_ids: Array) -> Array:
        """Text embeddings, projected but NOT L2-normalised.

        Args:
          variables: ``{"params": ...}`` of this model.
          token_ids: int32 [B, L], L <= ``context_length``, from the model's tokenizer;
            ids must be < ``vocab_size``.

        Returns:
          float32 [B, E].
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
