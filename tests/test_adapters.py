"""Adapters for Keras (JAX backend), Equinox, Flax Linen (compact) and NNX on the real
packages (tiny random models, tests/adapter_models.py): what is explained is the
package's own model, stage 1 is complete, reruns are identical, 1 and 4 host devices
agree, and each mistake the issue met fails early in one line (or is handled)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import texter_jax as tj  # noqa: E402
from tests.adapter_models import CLASSES, KINDS, SIZE, build  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = tj.ExplainConfig(k_neu=2, ig_steps=4, ranked_units=3, map_crops=2, use_sae=False,
                          maco=tj.MacoConfig(canvas=24, steps=2, n_crops=2))
IMAGES = np.random.default_rng(0).random((4, SIZE, SIZE, 3), dtype=np.float32)


def _sae(d):
    cfg = tj.SaeConfig(input_dim=d, nb_concepts=2 * d, top_k=max(2, d // 4))
    return tj.Sae(tj.init_sae(jax.random.key(5), cfg), cfg.top_k)


EXPLAINED: dict = {}  # kind -> its explanation with CONFIG on one device


def explain_parts(clf, variables, config, sae=None):
    """explain_batch of IMAGES with a random aligner and text bank for this model."""
    rng = np.random.default_rng(1)
    aligner = tj.Aligner(jnp.asarray(rng.normal(size=(6, clf.feature_dim)), jnp.float32),
                         jnp.zeros(6))
    text = jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)
    return tj.explain_batch(clf, variables, aligner, text, IMAGES,
                            tj.image_keys(0, range(len(IMAGES))), config, sae=sae)


@pytest.fixture(scope="module", params=KINDS)
def model(request):
    return (request.param, *build(request.param))


def test_the_package_model_is_explained_and_reruns_are_identical(model):
    kind, clf, variables, own = model
    assert isinstance(clf, tj.ClassifierLike) and clf.num_classes == CLASSES
    # (NNX: the model is built in train mode and explained in eval mode, see build.)
    own_logits = np.asarray(own(IMAGES))
    np.testing.assert_allclose(np.asarray(clf.logits(variables, jnp.asarray(IMAGES))),
                               own_logits, rtol=1e-5, atol=1e-5, err_msg=kind)
    a = explain_parts(clf, variables, CONFIG)
    b = explain_parts(clf, variables, CONFIG)
    EXPLAINED[kind] = a
    np.testing.assert_array_equal(a.label, own_logits.argmax(-1))
    for field in ("unit_ids", "concept_image", "crop_embeddings", "concept_scores"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


@pytest.mark.parametrize("use_sae", [False, True])
def test_ig_is_complete_on_features_and_sae_codes(model, use_sae):
    # Every head here is affine in z (and the SAE decoder affine in its codes), so IG's
    # sum equals F(end) - F(0) up to float32 rounding: rtol 1e-4 over <= 256 terms.
    kind, clf, variables, _ = model
    config = dataclasses.replace(CONFIG, use_sae=use_sae)
    got = tj.unit_contributions(clf, variables, IMAGES, config,
                                sae=_sae(clf.feature_dim) if use_sae else None)
    total = np.asarray(got.contrib.scores).sum(-1)
    gap = np.asarray(got.gap)
    assert np.all(np.abs(gap) > 1e-4), (kind, gap)  # a test that can fail
    np.testing.assert_allclose(total, gap, rtol=1e-4, atol=1e-5, err_msg=kind)


def test_one_and_four_host_devices_explain_alike(tmp_path):
    out = tmp_path / "four.npz"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu", "KERAS_BACKEND": "jax",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "tests.adapter_probe", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    four = np.load(out)
    assert int(four["n_devices"]) == 4 and jax.local_device_count() == 1
    from tests.adapter_probe import explain_all

    one = explain_all(EXPLAINED)  # those of the test above, when it ran
    for name, value in one.items():
        if value.dtype.kind in "iu":
            np.testing.assert_array_equal(four[name], value, err_msg=name)
        else:
            np.testing.assert_allclose(four[name], value, rtol=1e-5, atol=1e-5, err_msg=name)


def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def test_wrong_layer_names_list_the_layers_there_are():
    from tests.adapter_models import keras_model, linen_resnet

    with pytest.raises(tj.LayerNotFound) as err:
        tj.from_keras(keras_model(), features_layer="avg_pool")
    assert "'avg_pool'" in _one_line(err) and "pool, logits" in str(err.value)
    module, variables = linen_resnet()
    with pytest.raises(tj.LayerNotFound) as err:
        tj.from_linen(module, variables, head_layer="fc", image_size=SIZE)
    assert "'fc'" in _one_line(err) and "block2_0" in str(err.value) and "Dense_0" in str(
        err.value)


def test_keras_softmax_output_and_linen_train_mode_are_refused():
    import keras

    from tests.adapter_models import linen_resnet

    inp = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(inp)
    probs = keras.Model(inp, keras.layers.Dense(CLASSES, activation="softmax")(pooled))
    with pytest.raises(ValueError) as err:
        tj.from_keras(probs, features_layer="pool")
    assert "classifier_activation=None" in _one_line(err)
    module, variables = linen_resnet()
    with pytest.raises(ValueError) as err:
        tj.from_linen(module, variables, head_layer="Dense_0", image_size=SIZE,
                      apply_kwargs={"train": True})
    assert "eval mode" in _one_line(err)


def test_an_equinox_module_passed_whole_fails_before_stage_one(monkeypatch):
    import texter_jax.explain as explain_lib
    from tests.adapter_models import equinox_model

    clf, _, _ = build("equinox")
    monkeypatch.setattr(explain_lib, "stage1_program", lambda *a, **k: 1 / 0)
    with pytest.raises(tj.ClassifierMismatch) as err:
        explain_parts(clf, equinox_model(), CONFIG)
    assert "tj.from_equinox" in _one_line(err)


def test_keras_float32_policy_under_bfloat16_warns_with_the_policy_to_set():
    clf, variables, _ = build("keras")
    config = dataclasses.replace(CONFIG, compute_dtype="bfloat16")
    with pytest.warns(tj.ComputeDtypeWarning, match="mixed_bfloat16"):
        tj.check_classifier(clf, variables, config=config)  # explain_batch's first step
