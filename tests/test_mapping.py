"""Stage 3 maths (aligner, post-processing, retrieval) and the text-embedding cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from texter_jax.aligner import align
from texter_jax.mapping import (
    concept_alpha,
    concept_rgba,
    l2_normalize,
    normalize_concept_image,
    postprocess_concept_image,
    random_crops,
    rank_concepts,
    retrieve,
)
from texter_jax.text_cache import TextEmbeddingCache, checkpoint_identity


def test_align_is_affine():
    rng = np.random.default_rng(0)
    w, b, z = rng.normal(size=(5, 3)), rng.normal(size=5), rng.normal(size=(4, 3))
    np.testing.assert_allclose(align(jnp.asarray(w), jnp.asarray(b), jnp.asarray(z)),
                               z @ w.T + b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        align(jnp.asarray(w), jnp.asarray(b), jnp.zeros((2, 4)))
    np.testing.assert_allclose(jnp.linalg.norm(l2_normalize(jnp.asarray(z)), axis=-1), 1, rtol=1e-6)


def _release_postprocess(image_chw, alpha_chw):
    # numpy transcription of the release's steps (CHW), for comparison
    img = np.clip(image_chw, np.percentile(image_chw, 1), np.percentile(image_chw, 99))
    img = (img - img.min()) / (img.max() - img.min())
    a = np.mean(alpha_chw, 0, keepdims=True)
    a = np.clip(a, None, np.percentile(a, 80))
    a = a / a.max()
    return a * img + (1 - a) * np.ones_like(img)


def test_postprocess_matches_release_order_and_percentiles():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(32, 40, 3)).astype(np.float32) * 3
    trans = rng.exponential(size=(32, 40, 3)).astype(np.float32)
    ours = np.asarray(postprocess_concept_image(image, trans))
    ref = _release_postprocess(image.transpose(2, 0, 1), trans.transpose(2, 0, 1))
    np.testing.assert_allclose(ours, ref.transpose(1, 2, 0), atol=1e-5)
    # percentile behaviour: 20% of alpha pixels are >= the 80th percentile -> alpha 1
    alpha = np.asarray(concept_alpha(trans))[..., 0]
    assert alpha.max() == 1.0 and abs((alpha >= 1 - 1e-6).mean() - 0.2) < 0.01
    # outliers beyond the 1st/99th percentile are clipped before min-max
    img = np.zeros((10, 10, 3), np.float32)
    img[0, 0, 0] = 1000.0
    assert float(normalize_concept_image(img).max()) == 0.0  # constant after clipping
    assert concept_rgba(image, trans).shape == (32, 40, 4)


def test_zero_transparency_gives_white():
    out = postprocess_concept_image(np.ones((8, 8, 3)), np.zeros((8, 8, 3)))
    np.testing.assert_array_equal(out, 1.0)


def test_random_crops_shape_and_range():
    key = jax.random.key(0)
    img = jax.random.uniform(key, (128, 128, 3))
    crops = random_crops(key, img, n=6, size=32)
    assert crops.shape == (6, 32, 32, 3)
    assert float(crops.min()) >= -1e-6 and float(crops.max()) <= 1 + 1e-6


def test_exact_text_ranks_first_and_crop_average():
    rng = np.random.default_rng(2)
    texts = [f"concept {i}" for i in range(20)]
    text_emb = rng.normal(size=(20, 16)).astype(np.float32)
    # image b's crops are noisy copies of text b*3's embedding
    crops = np.stack([text_emb[3 * b] * 2 + 0.01 * rng.normal(size=(6, 16)) for b in range(3)])
    scores = retrieve(jnp.asarray(crops), jnp.asarray(text_emb))
    assert scores.shape == (3, 20)
    assert list(np.argmax(scores, -1)) == [0, 3, 6]
    # closed form: mean over crops of cosines
    c = crops / np.linalg.norm(crops, axis=-1, keepdims=True)
    t = text_emb / np.linalg.norm(text_emb, axis=-1, keepdims=True)
    np.testing.assert_allclose(scores, np.einsum("bce,te->bct", c, t).mean(1), atol=1e-5)
    ranked = rank_concepts(scores, texts, top=2)
    assert ranked[1][0][0] == "concept 3" and len(ranked[1]) == 2
    assert rank_concepts(np.array([1.0, 2.0, 2.0]), ["a", "b", "c"]) == [
        ("b", 2.0), ("c", 2.0), ("a", 1.0)]


def test_text_cache_hits_avoid_encoding(tmp_path):
    calls = []

    def encode(batch):
        calls.append(list(batch))
        return np.stack([np.full(4, len(t), np.float32) for t in batch])

    cache = TextEmbeddingCache(tmp_path, "clip-b16#stat:abc")
    out = cache.get(["red", "fur", "red", "wheel"], encode, batch_size=2)
    assert calls == [["red", "fur"], ["wheel"]]  # de-duplicated, batched
    np.testing.assert_array_equal(out[:, 0], [3, 3, 3, 5])
    calls.clear()
    again = TextEmbeddingCache(tmp_path, "clip-b16#stat:abc").get(["wheel", "red"], encode)
    assert calls == [] and again.shape == (2, 4)
    # only the new text is encoded
    cache.get(["red", "stripes"], encode)
    assert calls == [["stripes"]]
    # another encoder identity never sees these entries
    calls.clear()
    TextEmbeddingCache(tmp_path, "other-model").get(["red"], encode)
    assert calls == [["red"]]
    # a corrupt file is re-encoded
    cache.path_for("fur").write_bytes(b"garbage")
    calls.clear()
    cache.get(["fur"], encode)
    assert calls == [["fur"]]


def test_checkpoint_identity_changes_with_files(tmp_path):
    (tmp_path / "texter_config.json").write_text('{"a": 1}')
    (tmp_path / "w.bin").write_bytes(b"1234")
    a = checkpoint_identity(tmp_path)
    assert a == checkpoint_identity(tmp_path)
    c1 = checkpoint_identity(tmp_path, content=True)
    (tmp_path / "w.bin").write_bytes(b"12345")
    assert checkpoint_identity(tmp_path) != a
    assert checkpoint_identity(tmp_path, content=True) != c1
