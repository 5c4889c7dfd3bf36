"""BatchTopK (Bussmann et al. 2024): the batch-level selection against numpy, training
that stores its threshold with the weights, inference that uses it (round-tripped through
the folder format) at the training L0, against TopK at the same L0 on the same data."""

import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.train.test_sae_auxk import _sparse_coded_rows
from texter_jax import sae as sae_io
from texter_jax.sae import SaeConfig, init_sae, sae_encode
from texter_jax.sae_batchtopk import batch_topk_mask, smallest_kept
from texter_jax.train.sae_train import SaeTrainConfig, evaluate_sae, train_sae


def test_batch_topk_keeps_the_k_times_b_largest_of_the_batch():
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.normal(size=(5, 40)), 0).astype(np.float32)
    got = np.asarray(batch_topk_mask(jnp.asarray(acts), 3))
    flat = acts.reshape(-1)
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[:15]] = True
    np.testing.assert_array_equal(got, np.where(keep, flat, 0).reshape(5, 40))
    per_row = (got > 0).sum(1)
    assert per_row.sum() == 15 and per_row.min() != per_row.max()  # rows share the budget
    assert float(smallest_kept(got)) == pytest.approx(np.sort(flat)[-15])


def test_topk_and_threshold_encoding_are_chosen_by_the_params():
    params = init_sae(jax.random.key(0), SaeConfig(8, 32, 4))
    x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    _, codes = sae_encode(params, x, 4)
    assert (np.asarray(codes) > 0).sum(1).max() <= 4
    pre, codes = sae_encode({**params, "threshold": jnp.float32(0.2)}, x, 4)
    acts = np.maximum(np.asarray(pre), 0)
    np.testing.assert_array_equal(codes, np.where(acts > 0.2, acts, 0))


def _train(rows, activation, out):
    cfg = SaeConfig(input_dim=32, nb_concepts=256, top_k=8, activation=activation)
    return train_sae(rows, out, sae_config=cfg, progress=False, verbose=False,
                     train_config=SaeTrainConfig(epochs=15, batch_size=256, lr=2e-3,
                                                 checkpoint_every=0))


def test_batchtopk_training_stores_a_threshold_that_gives_the_training_l0():
    rows = _sparse_coded_rows(seed=1)
    with tempfile.TemporaryDirectory() as out:
        result = _train(rows, "batchtopk", out)
        config, _ = sae_io.load(f"{out}/sae")
        loaded = sae_io.load_sae(out)
    theta = float(result.params["threshold"])
    assert config.activation == "batchtopk"
    assert theta > 0 and result.logs[-1]["threshold"] == pytest.approx(theta)
    assert float(loaded.params["threshold"]) == theta  # saved with the weights
    ev = evaluate_sae(loaded.params, rows.x, 8)  # inference: the threshold, not top-k
    # measured here: inference L0 8.14 and R^2 0.557 (training: L0 8.0, batch R^2 0.534)
    assert ev["l0"] == pytest.approx(8.0, rel=0.1)
    with tempfile.TemporaryDirectory() as out:
        topk = evaluate_sae(_train(rows, "topk", out).params, rows.x, 8)
    # same data, same L0: TopK reached R^2 0.377 here (fewer latents stay alive)
    assert ev["r2"] > topk["r2"] + 0.1
