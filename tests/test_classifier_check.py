"""No silent mismatch between a classifier and what it is explained with: MACO's crops
follow ``classifier.image_size``, and a classifier that does not fit its declaration,
the aligner or the SAE fails before stage 1 with one line naming it and the fix."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import texter_jax.explain as explain_lib
from texter_jax.aligner import Aligner
from texter_jax.classifier import FunctionClassifier
from texter_jax.classifier_check import ClassifierMismatch, ComputeDtypeWarning
from texter_jax.config import ExplainConfig, MacoConfig
from texter_jax.sae import Sae, SaeConfig, init_sae

SIZE, CLASSES, E = 8, 3, 6
D = 2 * (SIZE // 2) ** 2  # 2 channels, 2x2 mean pool, flattened: a fixed-size input
CONFIG = ExplainConfig(k_neu=2, ig_steps=4, ranked_units=3, map_crops=2, use_sae=False,
                       maco=MacoConfig(canvas=24, steps=2, n_crops=2))


def _params(key=0):
    k1, k2 = jax.random.split(jax.random.key(key))
    return {"w": jax.random.normal(k1, (3, 2)) * 0.5,
            "fc": jax.random.normal(k2, (D, CLASSES)) * 0.1}


def flatten_features(p, x):
    """[B, S, S, 3] -> [B, 2 (S/2)^2]: like an Equinox conv-pool-flatten trunk, its size
    follows the input's (the model of the issue that explained silently wrong)."""
    SEEN.append(tuple(x.shape))
    y = jnp.tanh(x @ p["w"])
    b, h, w, c = y.shape
    y = y.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    return y.reshape(b, -1)


def head(p, z):
    return z @ p["fc"]


SEEN: list = []


def _parts(d=D, e=E):
    rng = np.random.default_rng(0)
    return (Aligner(jnp.asarray(rng.normal(size=(e, d)), jnp.float32), jnp.zeros(e)),
            jnp.asarray(rng.normal(size=(5, e)), jnp.float32),
            rng.random((2, SIZE, SIZE, 3), dtype=np.float32))


def _clf(**kw):
    spec = dict(image_size=SIZE, feature_dim=D, num_classes=CLASSES, family="flat")
    spec.update(kw)
    features = spec.pop("features", flatten_features)
    return FunctionClassifier(features, spec.pop("head", head), **spec)


@pytest.fixture
def no_stage_runs(monkeypatch):
    """Stage 1 and MACO replaced by a tripwire: an error raised before them passes."""
    ran = []

    def tripwire(name):
        def f(*a, **k):
            ran.append(name)
            raise AssertionError(f"{name} ran before the mismatch was reported")
        return f

    monkeypatch.setattr(explain_lib, "stage1_program", tripwire("stage 1"))
    monkeypatch.setattr(explain_lib, "maco_batch_with_retry", tripwire("MACO"))
    return ran


def _explain(clf, params, config=CONFIG, sae=None, aligner=None):
    al, text, images = _parts()
    return explain_lib.explain_batch(clf, params, aligner or al, text, images,
                                     explain_lib.image_keys(0, range(2)), config, sae=sae)


def test_maco_crops_follow_the_classifier_image_size():
    SEEN.clear()
    ex = _explain(_clf(), _params())
    sides = {s[1:3] for s in SEEN}
    assert sides == {(SIZE, SIZE)}, sides  # MACO's crops too, not 224
    assert ex.concept_image.shape == (2, 24, 24, 3)
    assert CONFIG.for_image_size(SIZE).maco.crop_size == SIZE
    kept = dataclasses.replace(CONFIG, maco=dataclasses.replace(CONFIG.maco, crop_size=12))
    assert kept.for_image_size(SIZE).maco.crop_size == 12


@pytest.mark.parametrize("case, words", [
    ("feature_dim", "declare feature_dim=32"),
    ("num_classes", "declare num_classes=3"),
    ("keepdims", "pooled with keepdims"),
    ("crop_size", "leave crop_size=None"),
    ("aligner", "fit the aligner on this classifier's features (W [E, 32])"),
    ("sae", "use an SAE trained on this classifier's features"),
    ("not_arrays", "tj.from_equinox"),
])
def test_a_misfit_fails_before_stage_one_in_one_line(no_stage_runs, case, words):
    params, config, sae, aligner, clf = _params(), CONFIG, None, None, _clf()
    if case == "feature_dim":
        clf = _clf(feature_dim=16)
    elif case == "num_classes":
        clf = _clf(num_classes=4)
    elif case == "keepdims":
        clf = _clf(features=lambda p, x: flatten_features(p, x)[:, None, None, :],
                   head=lambda p, z: head(p, z.reshape(z.shape[0], -1)))
    elif case == "crop_size":  # this model's features only fit SIZE px inputs
        config = dataclasses.replace(CONFIG, maco=dataclasses.replace(CONFIG.maco,
                                                                      crop_size=4 * SIZE))
    elif case == "aligner":
        aligner = _parts(d=D // 2)[0]
    elif case == "sae":
        cfg = SaeConfig(input_dim=D // 2, nb_concepts=D, top_k=4)
        sae = Sae(init_sae(jax.random.key(0), cfg), cfg.top_k)
        config = dataclasses.replace(CONFIG, use_sae=True)
    elif case == "not_arrays":
        params = {**params, "act": jnp.tanh}
    with pytest.raises(ClassifierMismatch) as err:
        _explain(clf, params, config, sae, aligner)
    message = str(err.value)
    assert words in message and "\n" not in message, message
    assert message.startswith("explain_batch: ") and no_stage_runs == []
    if case != "not_arrays":
        assert "flat" in message  # names the classifier


def test_bfloat16_that_stays_float32_warns_once_and_true_bfloat16_does_not():
    config = dataclasses.replace(CONFIG, compute_dtype="bfloat16")
    float32_policy = _clf(features=lambda p, x: flatten_features(
        jax.tree.map(lambda a: a.astype(jnp.float32), p), x.astype(jnp.float32)))
    with pytest.warns(ComputeDtypeWarning, match="still gives float32 features"):
        _explain(float32_policy, _params(), config)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ComputeDtypeWarning)
        _explain(_clf(), _params(), config)


def test_session_checks_the_classifier_when_built(tmp_path):
    from tests.helpers import aligner_folder, tiny_classifier_folder, tiny_clip_folder
    from texter_jax import session as session_lib

    s = session_lib.load(tiny_classifier_folder(tmp_path / "clf"),
                         tiny_clip_folder(tmp_path / "clip", tmp_path),
                         aligner_folder(tmp_path / "aligner", 16, 12))
    wrong = FunctionClassifier(s.classifier.features, s.classifier.head,
                               image_size=s.classifier.image_size, feature_dim=12,
                               num_classes=s.classifier.num_classes, family="wrong")
    with pytest.raises(session_lib.SessionError, match="declare feature_dim=16"):
        session_lib.Session(wrong, s.variables, s.clip, s.clip_variables, s.aligner)
