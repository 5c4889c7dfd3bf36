"""Zero-shot evaluation of the world's CLIP on held-out whole images, zoomed views and
mosaics.

Each attribute value is represented by the mean embedding of its concept-bank phrases
(a prompt ensemble), the same phrases TEXTER later retrieves; an image's predicted value
is the nearest one by cosine. On zoomed views an attribute is scored only on the views
that show it (:func:`texter_jax.world.views.visible_attributes`).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from texter_jax.world.attributes import WorldAttrs, sample_attributes
from texter_jax.world.captions import ATTR_ORDER, value_phrases
from texter_jax.world.clip_model import WorldClip
from texter_jax.world.generator import render
from texter_jax.world.mosaics import mosaic_visible, render_mosaics, sample_mosaics
from texter_jax.world.views import DEFAULT_MIX, sample_views, visible_attributes


def eval_set(seed: int, n: int, image_size: int, *, zoomed: bool = False):
    """Held-out records, float32 images [N, S, S, 3] and their visibility [N, A].

    Seeded apart from training (``seed`` is the training run's root seed). ``zoomed``:
    close, partial and wide views of other held-out records instead of whole images.
    """
    seed = seed + (1_000_033 if zoomed else 1_000_003)
    attrs = sample_attributes(seed, n)
    views = None
    if zoomed:
        views = sample_views(seed, attrs, tuple((k, w) for k, w in DEFAULT_MIX if k != "whole"))
    images = render(attrs, seed, image_size=image_size, views=views) / np.float32(255)
    return attrs, images, visible_attributes(attrs, views, image_size)


def eval_mosaics(seed: int, n: int, image_size: int, shared):
    """Held-out mosaics (:mod:`texter_jax.world.mosaics`): their first tiles' records,
    float32 images [N, S, S, 3] and what each shows [N, A] (only shared values)."""
    seed = seed + 1_000_039
    m = sample_mosaics(seed, n, image_size, shared=shared)
    images = render_mosaics(m, seed) / np.float32(255)
    return m.records(), images, mosaic_visible(m)


@functools.partial(jax.jit, static_argnums=0)
def _encode_images(model: WorldClip, variables, images):
    return model.encode_image(variables, images)


def embed_images(model: WorldClip, variables, images: np.ndarray, batch: int = 200) -> np.ndarray:
    """L2-normalised image embeddings float32 [N, E] of images float32 [N, S, S, 3] in [0, 1].

    Fixed-size chunks (the last zero-padded), so the jitted encoder compiles once.
    """
    out = []
    for i in range(0, len(images), batch):
        x = np.asarray(images[i:i + batch], np.float32)
        n = len(x)
        if n < batch:
            x = np.concatenate([x, np.zeros((batch - n, *x.shape[1:]), np.float32)])
        out.append(np.asarray(_encode_images(model, variables, x))[:n])
    out = np.concatenate(out)
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def embed_texts(model: WorldClip, variables, texts: list[str]) -> np.ndarray:
    """L2-normalised text embeddings float32 [N, E]."""
    out = np.asarray(model.encode_text(variables, model.tokenize(texts)))
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def zero_shot_accuracy(model: WorldClip, variables, attrs: WorldAttrs, images: np.ndarray,
                       visible: np.ndarray | None = None) -> dict[str, float]:
    """Zero-shot accuracy per discrete attribute on held-out images.

    Each value is represented by the mean of its concept-bank phrase embeddings (a
    prompt ensemble), the same phrases TEXTER later retrieves; an image's predicted value
    is the nearest one by cosine.

    Args:
      visible: optional bool [N, A]: score each attribute only on the images whose view
        shows it.

    Returns:
      ``{attribute: accuracy in [0, 1]}`` (NaN for an attribute no image shows).
    """
    img = embed_images(model, variables, images)
    acc = {}
    for j, a in enumerate(ATTR_ORDER):
        protos = []
        for phrases in value_phrases(a):
            e = embed_texts(model, variables, phrases).mean(0)
            protos.append(e / np.linalg.norm(e))
        right = np.argmax(img @ np.stack(protos).T, axis=1) == getattr(attrs, a)
        rows = np.ones(len(right), bool) if visible is None else visible[:, j]
        acc[a] = float(np.mean(right[rows])) if rows.any() else float("nan")
    return acc
