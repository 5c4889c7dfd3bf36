"""hit@k and bootstrap CIs on hand-built cases."""

import numpy as np
import pytest

from texter_jax.world import bootstrap_ci, concept_bank, hit_table, hits_at_k

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


def test_bootstrap_ci_properties():
    x = np.r_[np.ones(30), np.zeros(70)]
    est, lo, hi = bootstrap_ci(x, seed=0)
    assert est == pytest.approx(0.3) and lo < 0.3 < hi
    assert (lo, hi) == bootstrap_ci(x, seed=0)[1:]  # reproducible for a seed
    cont = np.random.default_rng(0).normal(size=50)  # continuous: CI moves with the seed
    assert bootstrap_ci(cont, seed=1)[1:] != bootstrap_ci(cont, seed=2)[1:]
    # Normal approximation: half-width ~ 1.96 * sqrt(p (1 - p) / n) = 0.09.
    assert 0.06 < (hi - lo) / 2 < 0.12
    big = np.tile(x, 16)
    _, blo, bhi = bootstrap_ci(big, seed=0)
    assert (bhi - blo) < (hi - lo) / 2.5
    assert bootstrap_ci([1, 1, 1], seed=0) == (1.0, 1.0, 1.0)
    assert all(np.isnan(bootstrap_ci([], seed=0)))
    med, mlo, mhi = bootstrap_ci(np.arange(11.0), seed=0, statistic=np.median, n_boot=200)
    assert med == 5.0 and mlo <= 5.0 <= mhi


def test_hit_table():
    table = hit_table([["red", "star shape"]] * 4, [("shape", "star")] * 4, MEANING,
                      ks=(1, 2), seed=0, n_boot=100)
    assert table["hit@1"]["rate"] == 0.0 and table["hit@2"]["rate"] == 1.0
    assert table["hit@2"]["n"] == 4
