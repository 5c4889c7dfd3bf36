"""Activations of a named layer of a Linen model, an NNX model and a plain function,
streamed into feature shards and trained on by the SAE; a wrong layer name lists the
layers there are, before any image is read.

Each captured layer is compared with the same layer computed on its own from its
parameters (fp32, highest precision, atol 1e-5)."""

import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from tests.helpers import tiny_classifier_folder
from texter_jax.capture import LayerNotFound, capture_function, capture_linen, capture_nnx
from texter_jax.sae import SaeConfig
from texter_jax.train.feature_decode import preprocess_image
from texter_jax.train.features import FeatureShards, extract_features, list_image_folder
from texter_jax.train.layer_features import check_layer, layer_features, reduce_activation
from texter_jax.train.sae_train import SaeTrainConfig, train_sae

REPO = Path(__file__).resolve().parents[2]
SIZE = 16


class Net(nn.Module):  # compact Linen: layer names Conv_0, Conv_1, Dense_0
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(6, (3, 3))(x))
        h = nn.relu(nn.Conv(5, (3, 3), strides=2)(h))
        return nn.Dense(3)(h.mean((1, 2)))


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(3, 7, rngs=rngs), nnx.Linear(7, 4, rngs=rngs)])

    def __call__(self, x):
        return self.layers[1](nnx.relu(self.layers[0](x)))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)).save(
                root / c / f"{i}.png")
    return root


def _decoded(items):
    return np.stack([preprocess_image(p, "aligner", SIZE) for p, _ in items]
                    ).astype(np.float32) / 255.0


def test_linen_layer_streams_into_shards_equal_to_the_layer_itself(images, tmp_path):
    net = Net()
    variables = net.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    fn = layer_features(capture_linen(net, ["Conv_1"]), reduce="mean")
    assert check_layer(fn, variables, SIZE) == 5
    items, classes = list_image_folder(images)
    out = extract_features(items, fn, tmp_path / "f", preprocess="aligner", image_size=SIZE,
                           batch_size=8, shard_size=8, variables=variables, progress=False,
                           classes=classes, extra_settings={"layer": "Conv_1"})
    shards = FeatureShards(out)
    assert len(shards) == 20 and shards.dim == 5
    assert len(list(out.glob("features_*.npy"))) == 3  # streamed: 8 + 8 + 4 rows
    x = jnp.asarray(_decoded(items))
    p = variables["params"]
    h = nn.relu(nn.Conv(6, (3, 3)).apply({"params": p["Conv_0"]}, x))
    # the Conv module's own output (the ReLU after it is a function, not a layer)
    want = nn.Conv(5, (3, 3), strides=2).apply({"params": p["Conv_1"]}, h).mean((1, 2))
    np.testing.assert_allclose(shards.take(np.arange(20)), np.asarray(want), atol=1e-5)
    # another layer into the same folder is refused, not mixed in
    with pytest.raises(Exception, match="layer"):
        extract_features(items, fn, out, preprocess="aligner", image_size=SIZE, batch_size=8,
                         shard_size=8, variables=variables, progress=False,
                         extra_settings={"layer": "Conv_0"})
    # the SAE trains on the shards a batch at a time
    res = train_sae(shards, tmp_path / "sae", sae_config=SaeConfig(input_dim=5, nb_concepts=16,
                                                                   top_k=3),
                    train_config=SaeTrainConfig(epochs=3, batch_size=8, lr=1e-2, seed=0),
                    progress=False, verbose=False)
    losses = [log["loss"] for log in res.logs]
    assert np.isfinite(losses[-1]) and losses[-1] < losses[0], losses


def test_nnx_and_function_layers_equal_their_closed_forms():
    graphdef, state = nnx.split(NnxNet(nnx.Rngs(0)))
    x = jax.random.uniform(jax.random.key(1), (4, 3))
    first = state["layers"][0]
    want = x @ first["kernel"][...] + first["bias"][...]
    got = layer_features(capture_nnx(graphdef, ["layers/0"]))(state, x)
    np.testing.assert_allclose(got, want, atol=1e-5)

    def fn(v, x):
        h = jnp.tanh(x.reshape(x.shape[0], -1) @ v["w"])
        return h.sum(-1), {"block": {"h": h}}

    v = {"w": jax.random.normal(jax.random.key(2), (SIZE * SIZE * 3, 6))}
    imgs = jax.random.uniform(jax.random.key(3), (2, SIZE, SIZE, 3))
    got = layer_features(capture_function(fn, ["block/h"]), prepare=lambda a: 2 * a - 1)(v, imgs)
    np.testing.assert_allclose(got, np.tanh((2 * np.asarray(imgs) - 1).reshape(2, -1)
                                            @ np.asarray(v["w"])), atol=1e-5)


def test_reductions_on_tokens():
    a = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 4)), jnp.float32)  # [B, T, C]
    np.testing.assert_allclose(reduce_activation(a, "mean"), np.asarray(a).mean(1), atol=1e-6)
    np.testing.assert_allclose(reduce_activation(a, "first"), np.asarray(a)[:, 0])
    assert reduce_activation(a, "flatten").shape == (2, 20)
    with pytest.raises(ValueError, match="reduce must be one of"):
        layer_features(capture_function(lambda v, x: (x, {"h": x}), ["h"]), reduce="max")


def test_wrong_layer_name_lists_the_layers_before_any_image(tmp_path):
    net = Net()
    variables = net.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    fn = layer_features(capture_linen(net, ["Conv_9"]))
    with pytest.raises(LayerNotFound, match="Conv_9.*Conv_0, Conv_1, Dense_0"):
        check_layer(fn, variables, SIZE)


def test_cli_extracts_a_named_layer_and_names_the_layers_of_a_wrong_one(images, tmp_path):
    model = tiny_classifier_folder(tmp_path / "clf", image_size=SIZE)

    def texter(*args):
        return subprocess.run([sys.executable, "-m", "texter_jax.cli", "extract-features",
                               "--model", str(model), "--images", str(images), "--no-progress",
                               *args], cwd=REPO, capture_output=True, text=True, timeout=300)

    bad = texter("--out", str(tmp_path / "bad"), "--layer", "nope")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "has no layer 'nope'" in bad.stderr and "stage1" in bad.stderr, bad.stderr
    assert not (tmp_path / "bad").exists()
    ok = texter("--out", str(tmp_path / "ok"), "--layer", "stage1")
    assert ok.returncode == 0, ok.stderr
    shards = FeatureShards(tmp_path / "ok")
    assert len(shards) == 20 and shards.dim == 8  # the first stage's 8 channels
