"""`explain_batch` end to end on a small ResNet: shapes, determinism, batch == singles,
the SAE and feature paths, the Text-to-Concept baseline against its closed form, and
8 forced host devices == 1 device."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from texter_jax.emphasis import MacoConfig
from texter_jax.emphasis.crops import crop_and_resize
from texter_jax.explain import (
    Aligner,
    ExplainConfig,
    Sae,
    explain_batch,
    image_keys,
    text_to_concept,
    text_to_concept_batch,
    text_to_concept_embed_batch,
)
from texter_jax.models.resnet import ResNetConfig, make_classifier, random_variables
from texter_jax.sae import SaeConfig, init_sae

REPO = Path(__file__).resolve().parents[1]
SIZE = 32


def _setup(seed=0):
    cfg = ResNetConfig(block="basic", depths=(1, 1), widths=(8, 16), stem_width=8,
                       num_classes=5, image_size=SIZE)
    clf = make_classifier(cfg)
    variables = jax.tree.map(jnp.asarray, random_variables(clf, seed))
    d = clf.feature_dim
    rng = np.random.default_rng(seed)
    sae_cfg = SaeConfig(input_dim=d, nb_concepts=4 * d, top_k=d // 2)
    sae = Sae(init_sae(jax.random.key(seed), sae_cfg), sae_cfg.top_k)
    aligner = Aligner(jnp.asarray(rng.normal(size=(12, d)) / np.sqrt(d), jnp.float32),
                      jnp.asarray(rng.normal(size=12) * 0.1, jnp.float32))
    text_emb = jnp.asarray(rng.normal(size=(20, 12)), jnp.float32)
    images = rng.random((3, SIZE, SIZE, 3), dtype=np.float32)
    return clf, variables, sae, aligner, text_emb, images


CONFIG = ExplainConfig(k_neu=3, ig_steps=8, ranked_units=6, map_crops=2,
                       maco=MacoConfig(canvas=48, steps=4, crop_size=SIZE, n_crops=2))


def test_explain_shapes_and_determinism():
    clf, v, sae, al, text, images = _setup()
    keys = image_keys(0, np.arange(3))
    a = explain_batch(clf, v, al, text, images, keys, CONFIG, sae=sae)
    b = explain_batch(clf, v, al, text, images, keys, CONFIG, sae=sae)
    assert a.concept_image.shape == (3, 48, 48, 3)
    assert a.transparency.shape == (3, 48, 48, 3)
    assert a.concept_scores.shape == (3, 20)
    assert a.objective_trace.shape == (3, 4)
    assert a.unit_ids.shape[0] == 3 and a.unit_ids.shape[1] >= 3
    assert np.all((a.concept_image >= 0) & (a.concept_image <= 1))
    assert np.all(np.abs(a.concept_scores) <= 1 + 1e-5)
    # selected units are active SAE codes of the image
    from texter_jax.sae import sae_encode
    z = clf.features(v, jnp.asarray(images))
    _, codes = sae_encode(sae.params, z, sae.top_k)
    for i in range(3):
        for u in a.unit_ids[i]:
            if u >= 0:
                assert codes[i, u] != 0
    # same keys -> identical results, bit for bit
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    # predicted label is the classifier's argmax
    np.testing.assert_array_equal(a.label, np.argmax(clf.logits(v, jnp.asarray(images)), -1))


def test_batch_equals_single_runs():
    clf, v, sae, al, text, images = _setup()
    keys = image_keys(7, np.arange(3))
    batch = explain_batch(clf, v, al, text, images, keys, CONFIG, sae=sae)
    for i in range(3):
        single = explain_batch(clf, v, al, text, images[i:i + 1], keys[i:i + 1], CONFIG,
                               sae=sae)
        np.testing.assert_array_equal(single.unit_ids[0, :3], batch.unit_ids[i, :3])
        # fp32, different batch shapes -> different reduction orders: 1e-4 bound.
        np.testing.assert_allclose(single.concept_image[0], batch.concept_image[i], atol=1e-4)
        np.testing.assert_allclose(single.concept_scores[0], batch.concept_scores[i],
                                   atol=1e-4)


def test_feature_path_without_sae():
    clf, v, _, al, text, images = _setup()
    cfg = ExplainConfig(k_neu=3, ig_steps=8, ranked_units=6, map_crops=2, use_sae=False,
                        maco=CONFIG.maco)
    out = explain_batch(clf, v, al, text, images, image_keys(0, range(3)), cfg)
    assert np.all(out.unit_ids[:, :3] >= 0)
    assert np.all(out.unit_ids < clf.feature_dim)
    with pytest.raises(ValueError, match="no SAE"):
        explain_batch(clf, v, al, text, images, image_keys(0, range(3)), CONFIG)


def test_crop_labels_class_logit_ablation_and_whole_canvas():
    from texter_jax import mapping
    from texter_jax.aligner import align
    from texter_jax.explain import read_canvases_jit

    clf, v, _, al, text, images = _setup()
    keys = image_keys(3, range(3))
    base = ExplainConfig(k_neu=3, ig_steps=8, ranked_units=6, map_crops=2, use_sae=False,
                         maco=CONFIG.maco)
    units = explain_batch(clf, v, al, text, images, keys, base)
    # crop_labels: the classifier's class of each stage-3 crop of the blended canvas
    blended = jax.vmap(mapping.postprocess_concept_image)(units.concept_image,
                                                          units.transparency)
    map_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    emb, logits = read_canvases_jit(clf, v, al.w, al.b, map_keys, blended, n_crops=2)
    np.testing.assert_allclose(units.crop_embeddings, emb, atol=1e-5)
    np.testing.assert_array_equal(units.crop_labels, np.argmax(logits, -1))
    # the ablation maximises the predicted class's logit; units are still reported
    logit = explain_batch(clf, v, al, text, images, keys,
                          dataclasses.replace(base, objective="class_logit"))
    np.testing.assert_array_equal(logit.unit_ids, units.unit_ids)
    assert logit.objective_trace.shape == (3, CONFIG.maco.steps)
    assert not np.allclose(logit.concept_image, units.concept_image)
    # whole canvas: one more view, the canvas resized, appended after the crops
    whole = explain_batch(clf, v, al, text, images, keys,
                          dataclasses.replace(base, map_whole_canvas=True))
    assert whole.crop_embeddings.shape[1] == 3 and whole.crop_labels.shape == (3, 3)
    np.testing.assert_allclose(whole.crop_embeddings[:, :2], units.crop_embeddings, atol=1e-5)
    full = jax.image.resize(blended, (3, SIZE, SIZE, 3), "linear", antialias=True)
    np.testing.assert_allclose(whole.crop_embeddings[:, 2],
                               align(al.w, al.b, clf.features(v, full)), atol=1e-4)
    # crop_views: the very views the reader reads (so another model can read them too)
    views = mapping.crop_views(map_keys, blended, n_crops=2, size=SIZE, whole=True)
    assert views.shape == (3, 3, SIZE, SIZE, 3)
    z = clf.features(v, views.reshape((9, SIZE, SIZE, 3)))
    np.testing.assert_allclose(align(al.w, al.b, z).reshape(3, 3, -1), whole.crop_embeddings,
                               atol=1e-4)
    # crop_boxes: the boxes of those views (cut again by crop_and_resize, the same pixels)
    boxes = mapping.crop_boxes(map_keys, n_crops=2)
    assert boxes.shape == (3, 2, 3)
    again = jax.vmap(lambda img, b: crop_and_resize(img, b, SIZE, max_side=0.30))(blended, boxes)
    np.testing.assert_allclose(again, views[:, :2], atol=1e-6)
    with pytest.raises(ValueError, match="objective"):
        ExplainConfig(objective="logits")


def test_text_to_concept_closed_form():
    clf, v, _, al, text, images = _setup()
    label, prob, scores = text_to_concept_batch(clf, v, al, text, images)
    z = np.asarray(clf.features(v, jnp.asarray(images)), np.float64)
    h = z @ np.asarray(al.w, np.float64).T + np.asarray(al.b, np.float64)
    t = np.asarray(text, np.float64)
    ref = (h / np.linalg.norm(h, axis=1, keepdims=True)) @ (
        t / np.linalg.norm(t, axis=1, keepdims=True)).T
    np.testing.assert_allclose(scores, ref, atol=1e-5)
    logits = np.asarray(clf.logits(v, jnp.asarray(images)))
    np.testing.assert_array_equal(label, logits.argmax(-1))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(prob, p[np.arange(3), label], atol=1e-6)
    # one classifier pass: as many convolutions as the features alone
    def convs(fn):
        return str(jax.make_jaxpr(fn)(jnp.asarray(images))).count("conv_general_dilated")
    n_features = convs(lambda x: clf.features(v, x))
    assert n_features > 0
    assert convs(lambda x: text_to_concept(clf, v, al, x)) == n_features
    _, _, emb = text_to_concept_embed_batch(clf, v, al, images)
    np.testing.assert_allclose(emb[:, 0], h, rtol=1e-5, atol=1e-5)


_SHARD_SCRIPT = r"""
import sys, numpy as np, jax
jax.config.update("jax_default_matmul_precision", "highest")
sys.path.insert(0, sys.argv[2])
from tests.test_explain import _setup, CONFIG
from texter_jax.explain import explain_batch, image_keys
clf, v, sae, al, text, images = _setup()
images = np.concatenate([images, images[::-1], images[:2]])  # 8 images
out = explain_batch(clf, v, al, text, images, image_keys(3, range(8)), CONFIG, sae=sae)
np.savez(sys.argv[1], devices=jax.device_count(), scores=out.concept_scores,
         units=out.unit_ids, image=out.concept_image)
"""


def test_eight_host_devices_match_one(tmp_path):
    results = {}
    for n in (1, 8):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
                   PYTHONPATH=str(REPO))
        out = tmp_path / f"d{n}.npz"
        proc = subprocess.run([sys.executable, "-c", _SHARD_SCRIPT, str(out), str(REPO)],
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[n] = np.load(out)
    assert int(results[8]["devices"]) == 8 and int(results[1]["devices"]) == 1
    np.testing.assert_array_equal(results[1]["units"], results[8]["units"])
    np.testing.assert_allclose(results[1]["image"], results[8]["image"], atol=1e-4)
    np.testing.assert_allclose(results[1]["scores"], results[8]["scores"], atol=1e-4)


def test_bf16_compute_tracks_fp32():
    """bf16 only changes the classifier's forward/backward inside MACO: outputs stay
    float32, units (chosen in fp32 stage 1) are identical, the objective trace follows."""
    import dataclasses

    clf, v, sae, al, text, images = _setup()
    keys = image_keys(0, np.arange(3))
    cfg = dataclasses.replace(CONFIG, use_sae=False)
    f32 = explain_batch(clf, v, al, text, images, keys, cfg)
    b16 = explain_batch(clf, v, al, text, images, keys,
                        dataclasses.replace(cfg, compute_dtype="bfloat16"))
    assert b16.concept_image.dtype == np.float32 and b16.concept_scores.dtype == np.float32
    np.testing.assert_array_equal(f32.unit_ids, b16.unit_ids)
    assert np.all(np.isfinite(b16.objective_trace))
    # bf16 has an 8-bit mantissa: the first step's objective (same phase, same crops)
    # agrees to a few parts in a hundred of its scale.
    scale = np.abs(f32.objective_trace[:, 0]).max() + 1e-6
    assert np.abs(f32.objective_trace[:, 0] - b16.objective_trace[:, 0]).max() <= 0.05 * scale


def test_presets_and_cli_choices():
    import argparse

    from texter_jax.cli import explain_cli
    from texter_jax.explain import PRESETS

    assert ExplainConfig.preset("release") == ExplainConfig()
    fast = ExplainConfig.preset("fast", k_neu=3)
    assert fast.k_neu == 3 and fast.maco.stop_rtol == 0.01 and fast.maco.steps == 512
    # a given MacoConfig keeps the preset's stopping rule
    mine = ExplainConfig.preset("fast", maco=MacoConfig(canvas=64, steps=256))
    assert (mine.maco.canvas, mine.maco.stop_rtol, mine.maco.stop_min_steps) == (64, 0.01, 128)
    with pytest.raises(ValueError, match="unknown preset"):
        ExplainConfig.preset("quick")
    parser = argparse.ArgumentParser()
    explain_cli.register(parser.add_subparsers())
    sub = parser._subparsers._group_actions[0].choices["explain"]
    preset = next(a for a in sub._actions if a.dest == "preset")
    assert list(preset.choices) == list(PRESETS)
