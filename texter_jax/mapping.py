"""Stage 3 of TEXTER: concept image -> aligned CLIP space -> ranked concept texts.

Release pipeline (``src/horama/utils.py: preprocess_for_maco_image`` then
``LLMConceptGenerator.compute_concept_similarity_for_maco_features``):

1. concept image: clip pixels to their 1st / 99th percentile (all channels pooled),
   min-max normalise to [0, 1];
2. transparency: mean over channels of the accumulated |d loss / d image| map, clipped
   from above at its 80th percentile, divided by its maximum -> alpha in [0, 1];
3. blend ``alpha * image + (1 - alpha) * white``;
4. 6 random square crops (centre ~ N(0.5, 0.15), side ~ U[0.25, 0.30] of the canvas,
   shifted inside it; no noise), resized to 224;
5. each crop -> classifier features -> ``h = z W^T + b`` -> L2-normalise;
6. texts -> CLIP text embeddings (the bare concept string, no prompt template),
   L2-normalised; score = cosine averaged over the crops; rank descending.

Percentiles use linear interpolation (numpy's default, as the release), found by exact
selection (:mod:`texter_jax.selection`) rather than a sort.

References:
  Moayeri et al., "Text-To-Concept (and Back) via Cross-Model Alignment",
  https://arxiv.org/abs/2305.06386
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from texter_jax import selection
from texter_jax.aligner import align
from texter_jax.emphasis import crops as _crops
from texter_jax.types import Array, PRNGKey

# Release defaults (preprocess_for_maco_image).
PERCENTILE_IMAGE = 1.0
PERCENTILE_ALPHA = 80.0
NUM_CROPS = 6
CROP_SIZE = 224
CROP_SIDE_RANGE = (0.25, 0.30)  # box_size=(0.20, 0.25) + the release's upper-bound offset
CROP_CENTRE_STD = 0.15


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-12) -> Array:
    """x / ||x|| along ``axis`` (a zero vector stays zero)."""
    norm = jnp.linalg.norm(x, axis=axis, keepdims=True)
    return x / jnp.maximum(norm, eps)


def normalize_concept_image(image: Array, percentile: float = PERCENTILE_IMAGE, *,
                            unroll: bool = False) -> Array:
    """Percentile clip then min-max normalise, over all pixels and channels.

    Args:
      image: float [H, W, 3], any range (MACO output).
    Returns:
      float32 [H, W, 3] in [0, 1] (all 0 if the clipped image is constant).
    """
    image = jnp.asarray(image, jnp.float32)
    lo = selection.percentile(image, percentile, unroll=unroll)
    hi = selection.percentile(image, 100.0 - percentile, unroll=unroll)
    image = jnp.clip(image, lo, hi)
    mn, mx = image.min(), image.max()
    return jnp.where(mx > mn, (image - mn) / jnp.where(mx > mn, mx - mn, 1.0), 0.0)


def concept_alpha(transparency: Array, percentile: float = PERCENTILE_ALPHA, *,
                  unroll: bool = False) -> Array:
    """Alpha map float32 [H, W, 1] in [0, 1] from the accumulated gradient map.

    Channel mean, clipped from above at its ``percentile``-th percentile, scaled to max 1.
    An all-zero map gives alpha 0 (the release would divide by zero; it re-runs MACO
    with one more unit in that case).

    Args:
      transparency: float [H, W, C] (C = 3 in the release) of |gradient| sums.
    """
    a = jnp.mean(jnp.asarray(transparency, jnp.float32), axis=-1, keepdims=True)
    a = jnp.minimum(a, selection.percentile(a, percentile, unroll=unroll))
    mx = a.max()
    return jnp.where(mx > 0, a / jnp.where(mx > 0, mx, 1.0), 0.0)


def postprocess_concept_image(image: Array, transparency: Array, *,
                              percentile_image: float = PERCENTILE_IMAGE,
                              percentile_alpha: float = PERCENTILE_ALPHA,
                              background: float = 1.0, unroll: bool = False) -> Array:
    """The release's concept image for stage 3: ``alpha * image + (1 - alpha) * white``.

    Args:
      image: float [H, W, 3] MACO image.
      transparency: float [H, W, 3] accumulated |d loss / d image|.
    Returns:
      float32 [H, W, 3] in [0, 1].
    """
    img = normalize_concept_image(image, percentile_image, unroll=unroll)
    alpha = concept_alpha(transparency, percentile_alpha, unroll=unroll)
    return alpha * img + (1.0 - alpha) * background


def concept_rgba(image: Array, transparency: Array, *,
                 percentile_image: float = PERCENTILE_IMAGE,
                 percentile_alpha: float = PERCENTILE_ALPHA) -> Array:
    """Normalised image with alpha as a 4th channel, float32 [H, W, 4] (for display)."""
    return jnp.concatenate([normalize_concept_image(image, percentile_image),
                            concept_alpha(transparency, percentile_alpha)], axis=-1)


def random_crops(key: PRNGKey, image: Array, n: int = NUM_CROPS,
                 size: int = CROP_SIZE) -> Array:
    """Stage-3 crops: ``n`` random square boxes kept inside the canvas, no noise.

    Boxes follow the release (centre N(0.5, 0.15) per axis, side U[0.25, 0.30] of the
    canvas, shifted to lie inside it). Resampling is the antialiased bilinear of
    :func:`texter_jax.emphasis.crops.crop_and_resize` (the release uses roi_align at 2x
    then an antialiased bicubic resize; the two differ by about one output pixel of blur).

    Args:
      key: PRNG key.
      image: float [S, S, 3] blended concept image.
    Returns:
      float [n, size, size, 3].
    """
    return _crops.random_crops(key, image, n, size, centre_std=CROP_CENTRE_STD,
                               side_range=CROP_SIDE_RANGE, noise=0.0, clip=True)


def crop_boxes(keys: PRNGKey, n_crops: int = NUM_CROPS) -> Array:
    """The boxes :func:`crop_views` cuts for each key: float32 [B, C, 3] of (cy, cx, side)
    in canvas fractions, for keys [B]."""
    return jax.vmap(lambda k: _crops.random_crop_boxes(
        k, n_crops, centre_std=CROP_CENTRE_STD, side_range=CROP_SIDE_RANGE, clip=True))(keys)


def crop_views(keys: PRNGKey, canvases: Array, *, n_crops: int = NUM_CROPS,
               size: int = CROP_SIZE, whole: bool = False) -> Array:
    """The views stage 3 reads of each canvas: :func:`random_crops` per key.

    Args:
      keys: [B] PRNG keys (crop boxes).
      canvases: float [B, S, S, 3].
      n_crops: C, crops per canvas; size: their side in pixels.
      whole: also the whole canvas, resized, as one more view (appended last).

    Returns:
      float [B, C', size, size, 3], C' = C (+ 1 with ``whole``). The same keys give the
      same views, so any other model can read exactly the crops the classifier reads.
    """
    def views(k, img):
        crops = random_crops(k, img, n_crops, size)  # [C, size, size, 3]
        if whole:
            full = _crops.crop_and_resize(img, jnp.array([[0.5, 0.5, 1.0]], jnp.float32), size)
            crops = jnp.concatenate([crops, full.astype(crops.dtype)])
        return crops

    return jax.vmap(views)(keys, canvases)


def read_canvases(classifier, variables, w: Array, b: Array, keys: PRNGKey, canvases: Array,
                  *, n_crops: int = NUM_CROPS, whole: bool = False) -> tuple[Array, Array]:
    """Stage 3's reader: random crops of each canvas -> classifier -> aligner.

    No post-processing: pass blended concept images (:func:`postprocess_concept_image`),
    or any canvas whose reading is a control (e.g. an input image upsampled to the
    canvas size).

    Args:
      classifier, variables: a :class:`~texter_jax.classifier.Classifier` and its weights.
      w, b: the aligner (see :func:`align`).
      keys: [B] PRNG keys (crop boxes).
      canvases: float [B, S, S, 3] in [0, 1].
      n_crops: C, crops per canvas (:func:`random_crops`, at the classifier's input size).
      whole: also read the whole canvas, resized, as one more view (appended last).

    Returns:
      ``(embeddings [B, C', E], logits [B, C', K])`` with C' = C (+ 1 with ``whole``):
      aligned, unnormalised CLIP-space embeddings and the classifier's logits of each
      view.
    """
    size = classifier.image_size
    n = canvases.shape[0]
    x = crop_views(keys, canvases, n_crops=n_crops, size=size, whole=whole)
    c = x.shape[1]
    z = classifier.features(variables, x.reshape((n * c, size, size, 3)))
    logits = classifier.head(variables, z)
    return align(w, b, z).reshape((n, c, -1)), logits.reshape((n, c, -1))


def retrieve(image_emb: Array, text_emb: Array) -> Array:
    """Cosine similarity of every text to every image, averaged over crops.

    Args:
      image_emb: float [B, C, E] aligned embeddings of C crops per image (or [B, E]).
      text_emb: float [T, E] text embeddings.
    Returns:
      float32 [B, T]: mean over crops of cos(crop, text). Both sides are
      L2-normalised here, so unnormalised inputs are fine.
    """
    if image_emb.ndim == 2:
        image_emb = image_emb[:, None]
    if image_emb.ndim != 3 or text_emb.ndim != 2 or image_emb.shape[-1] != text_emb.shape[-1]:
        raise ValueError(f"retrieve: image_emb {image_emb.shape} [B, C, E] and text_emb "
                         f"{text_emb.shape} [T, E] must share E")
    sims = jnp.einsum("bce,te->bct", l2_normalize(image_emb), l2_normalize(text_emb))
    return sims.mean(axis=1)


def rank_concepts(scores, texts: Sequence[str], top: int | None = None):
    """Concepts sorted by score, highest first (ties keep input order).

    Args:
      scores: float [T] or [B, T].
      texts: the T concept strings.
      top: keep only the first ``top`` (all by default).
    Returns:
      ``[(text, score), ...]`` for [T]; a list of such lists for [B, T].
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.shape[-1] != len(texts):
        raise ValueError(f"rank_concepts: {s.shape[-1]} scores for {len(texts)} texts")
    if s.ndim == 2:
        return [rank_concepts(row, texts, top) for row in s]
    order = np.argsort(-s, kind="stable")
    if top is not None:
        order = order[:top]
    return [(texts[i], float(s[i])) for i in order]
