"""hit@k and its bootstrap CIs on hand-built cases (the world's concept bank as meaning)."""

import numpy as np
import pytest

from texter_jax.eval.metrics.hits import hit_table, hits_at_k, mean_ci
from texter_jax.world import concept_bank

MEANING = concept_bank()[1]


def test_hits_at_k_hand_built():
    rankings = [["red", "grass background", "star shape"],
                ["star shape", "red"],
                ["not a world phrase", "a star"],
                []]
    truths = [("background", "grass"), ("background", "grass"), ("shape", "star"),
              ("shape", "star")]
    np.testing.assert_array_equal(hits_at_k(rankings, truths, MEANING, 1),
                                  [False, False, False, False])
    np.testing.assert_array_equal(hits_at_k(rankings, truths, MEANING, 2),
                                  [True, False, True, False])
    np.testing.assert_array_equal(hits_at_k(rankings, truths, MEANING, 3),
                                  [True, False, True, False])


def test_hits_with_several_truths_and_wrong_value():
    rankings = [["blue"], ["star shape"]]
    truths = [(("colour", "red"), ("shape", "star")), [("shape", "star"), ("colour", "red")]]
    np.testing.assert_array_equal(hits_at_k(rankings, truths, MEANING, 1), [False, True])
    with pytest.raises(ValueError):
        hits_at_k(rankings, truths[:1], MEANING, 1)
    with pytest.raises(ValueError):
        hits_at_k(rankings, truths, MEANING, 0)


def test_mean_ci_is_the_jax_bootstrap_for_one_metric():
    x = (np.arange(40) % 3 == 0).astype(float)
    ci = mean_ci(x, seed=0, n_boot=500)
    assert ci["n"] == 40 and ci["rate"] == pytest.approx(x.mean())
    assert ci["low"] < ci["rate"] < ci["high"]
    assert ci == mean_ci(x, seed=0, n_boot=500)  # reproducible for a seed
    assert mean_ci(x, seed=1, n_boot=500) != mean_ci(x, seed=2, n_boot=500)
    wide, narrow = mean_ci(x[:10], seed=0), mean_ci(np.tile(x, 10), seed=0)
    assert narrow["high"] - narrow["low"] < wide["high"] - wide["low"]
    assert mean_ci([1, 1, 1], seed=0) == {"rate": 1.0, "low": 1.0, "high": 1.0, "n": 3}
    assert np.isnan(mean_ci([], seed=0)["rate"])


def test_hit_table():
    table = hit_table([["red", "star shape"]] * 4, [("shape", "star")] * 4, MEANING,
                      ks=(1, 2), seed=0, n_boot=100)
    assert table["hit@1"]["rate"] == 0.0 and table["hit@2"]["rate"] == 1.0
    assert table["hit@2"]["n"] == 4
