"""The world CLIP's losses: multi-positive InfoNCE and the label-prompt loss.

See ``world/clip_train.py`` for why both exist (label prompts, UniCL-style, get shape
learned; multi-positive targets because dropped words make several images match one
caption).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from texter_jax.world.attributes import value_slices


def prompt_loss(img: jax.Array, prompts: jax.Array, log_scale: jax.Array,
                labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Label-prompt loss: per attribute, cross-entropy of each image over its value prompts.

    Args:
      img: image embeddings [B, E]; prompts: prompt embeddings [P, E] in the order of
        :func:`texter_jax.world.clip_train.label_prompts`; log_scale: the shared log logit scale [].
      labels: int [B, A] attribute values in :data:`ATTR_ORDER`.
      weights: float [B, A], weight of each image's cross-entropy per attribute (zero
        where the image's view does not show the attribute).

    Returns:
      Scalar: sum over attributes of the weighted mean cross-entropy over images.
    """
    img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
    prompts = prompts / jnp.linalg.norm(prompts, axis=-1, keepdims=True)
    logits = jnp.exp(jnp.minimum(log_scale, math.log(100.0))) * img @ prompts.T  # [B, P]
    ce = optax.softmax_cross_entropy_with_integer_labels
    losses = [ce(logits[:, lo:hi], labels[:, j]) * weights[:, j]
              for j, (lo, hi) in enumerate(value_slices())]
    return jnp.sum(jnp.stack(losses)) / img.shape[0]


def clip_loss(img: jax.Array, txt: jax.Array, log_scale: jax.Array,
              targets: jax.Array) -> jax.Array:
    """Symmetric InfoNCE with multi-positive targets (and optional extra texts).

    Args:
      img: image embeddings [B, E]; txt: text embeddings [T, E], T >= B, the first B
        being the images' own captions (any norm); extra rows act as more candidates
        in the image->text direction.
      log_scale: learned log logit scale [], capped at log(100) as in CLIP.
      targets: float [T, B], 1 where text i matches image j; ``targets[i, i] = 1``.

    Returns:
      Scalar: mean of the text->image cross-entropy over the B captions and the
      image->text cross-entropy over all T texts, against row-normalised targets.
    """
    b = img.shape[0]
    img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
    txt = txt / jnp.linalg.norm(txt, axis=-1, keepdims=True)
    logits = jnp.exp(jnp.minimum(log_scale, math.log(100.0))) * txt @ img.T  # [T, B]
    pos = targets[:b]
    t2i = optax.softmax_cross_entropy(logits[:b], pos / pos.sum(1, keepdims=True))
    i2t = optax.softmax_cross_entropy(logits.T, targets.T / targets.T.sum(1, keepdims=True))
    return 0.5 * (t2i.mean() + i2t.mean())
