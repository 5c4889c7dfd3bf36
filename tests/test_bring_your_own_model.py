"""Bring your own JAX model: every stage takes any classifier with pure ``features`` /
``head`` functions (``texter_jax.types.ClassifierLike``), not only our Linen zoo.

One small network (3x3 conv, ReLU, global mean pool, linear head) is written twice: as a
Flax NNX module and as two plain ``jax.numpy`` functions over a params dict holding the
same weights. Both are explained with ``explain_batch`` (SAE path and feature path):
their explanations must agree (fp32, 1e-5), and the units must be the closed form of
IG over a linear head, the top ``|z_j W_cj|``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from texter_jax.aligner import Aligner
from texter_jax.classifier import FunctionClassifier, nnx_classifier
from texter_jax.emphasis import MacoConfig
from texter_jax.explain import ExplainConfig, explain_batch, image_keys
from texter_jax.sae import Sae, SaeConfig, init_sae
from texter_jax.types import ClassifierLike

SIZE, WIDTH, CLASSES = 32, 16, 4
CONFIG = ExplainConfig(k_neu=3, ig_steps=8, ranked_units=6, map_crops=2,
                       maco=MacoConfig(canvas=48, steps=4, crop_size=SIZE, n_crops=2))


class TinyNnx(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, WIDTH, (3, 3), padding="SAME", rngs=rngs)
        self.fc = nnx.Linear(WIDTH, CLASSES, rngs=rngs)

    def features(self, x):  # [B, S, S, 3] in [0, 1] -> [B, WIDTH]
        return jnp.mean(jax.nn.relu(self.conv(x * 2.0 - 1.0)), axis=(1, 2))

    def head(self, z):
        return self.fc(z)


def _plain_pair():
    def features(p, x):
        y = lax.conv_general_dilated(x * 2.0 - 1.0, p["w1"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.mean(jax.nn.relu(y + p["b1"]), axis=(1, 2))

    def head(p, z):
        return z @ p["w2"] + p["b2"]

    return FunctionClassifier(features, head, image_size=SIZE, feature_dim=WIDTH,
                              num_classes=CLASSES, family="jnp")


@pytest.fixture(scope="module")
def models():
    model = TinyNnx(nnx.Rngs(0))
    nnx_clf, state = nnx_classifier(model, image_size=SIZE, feature_dim=WIDTH,
                                    num_classes=CLASSES)
    params = {"w1": model.conv.kernel[...], "b1": model.conv.bias[...],
              "w2": model.fc.kernel[...], "b2": model.fc.bias[...]}
    rng = np.random.default_rng(0)
    sae_cfg = SaeConfig(input_dim=WIDTH, nb_concepts=4 * WIDTH, top_k=WIDTH // 2)
    sae = Sae(init_sae(jax.random.key(0), sae_cfg), sae_cfg.top_k)
    aligner = Aligner(jnp.asarray(rng.normal(size=(12, WIDTH)) / 4, jnp.float32),
                      jnp.asarray(rng.normal(size=12) * 0.1, jnp.float32))
    text = jnp.asarray(rng.normal(size=(20, 12)), jnp.float32)
    images = rng.random((3, SIZE, SIZE, 3), dtype=np.float32)
    return (nnx_clf, state), (_plain_pair(), params), sae, aligner, text, images


@pytest.mark.parametrize("use_sae", [False, True])
def test_nnx_and_plain_jax_models_explain_alike(models, use_sae):
    (nnx_clf, state), (plain, params), sae, aligner, text, images = models
    assert isinstance(nnx_clf, ClassifierLike) and isinstance(plain, ClassifierLike)
    config = ExplainConfig(**{**CONFIG.__dict__, "use_sae": use_sae})
    keys = image_keys(0, np.arange(3))
    a = explain_batch(nnx_clf, state, aligner, text, images, keys, config, sae=sae)
    b = explain_batch(plain, params, aligner, text, images, keys, config, sae=sae)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.unit_ids, b.unit_ids)
    for name in ("prob", "concept_image", "transparency", "concept_scores"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-5,
                                   err_msg=name)
    # What was explained is this network: its prediction, and on the feature path the
    # units are the closed form of IG over a linear head.
    z = plain.features(params, jnp.asarray(images))
    logits = np.asarray(plain.head(params, z))
    np.testing.assert_array_equal(a.label, logits.argmax(-1))
    if not use_sae:
        contrib = np.abs(np.asarray(z) * np.asarray(params["w2"]).T[a.label])
        want = np.argsort(-contrib, axis=1)[:, :3]
        np.testing.assert_array_equal(a.unit_ids[:, :3], want)
    assert np.all(np.isfinite(a.concept_scores)) and a.concept_image.shape == (3, 48, 48, 3)
