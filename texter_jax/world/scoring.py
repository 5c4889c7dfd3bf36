"""Scoring explanations against the world's measured truth: hit@k and bootstrap CIs.

An explanation is a ranked list of concept phrases. It *hits at k* when one of its top-k
phrases names the value, in that image, of the classifier's decision-critical attribute
(e.g. "grass background" for an image on grass when background drives the decision).
Phrases outside the world's concept bank name nothing and never hit.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

Truth = tuple[str, str]  # (attribute, value name)


def _as_truth_set(t) -> frozenset[Truth]:
    # One (attribute, value) pair, or a collection of them (any of which counts).
    if len(t) == 2 and isinstance(t[0], str) and isinstance(t[1], str):
        return frozenset([(t[0], t[1])])
    return frozenset((str(a), str(v)) for a, v in t)


def hits_at_k(rankings: Sequence[Sequence[str]], truths: Sequence, meaning: Mapping[str, Truth],
              k: int) -> np.ndarray:
    """Whether each explanation names its image's critical value within its top k.

    Args:
      rankings: N explanations, each phrases ordered best first.
      truths: N entries, each an ``(attribute, value)`` pair or a collection of pairs
        (hit if any is named), e.g. from
        :func:`texter_jax.world.interventions.truth_values`.
      meaning: ``phrase -> (attribute, value)`` (the concept bank's mapping).
      k: cut-off, >= 1.

    Returns:
      bool [N].

    >>> meaning = {"red": ("colour", "red"), "star shape": ("shape", "star")}
    >>> hits_at_k([["red", "star shape"]], [("shape", "star")], meaning, 1).tolist()
    [False]
    >>> hits_at_k([["red", "star shape"]], [("shape", "star")], meaning, 2).tolist()
    [True]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(rankings) != len(truths):
        raise ValueError(f"{len(rankings)} explanations but {len(truths)} truths")
    out = np.zeros(len(rankings), bool)
    for i, (ranked, truth) in enumerate(zip(rankings, truths)):
        want = _as_truth_set(truth)
        out[i] = any(meaning.get(p) in want for p in list(ranked)[:k])
    return out


def bootstrap_ci(values, *, seed: int, n_boot: int = 2000, level: float = 0.95,
                 statistic: Callable[[np.ndarray], float] = np.mean) -> tuple[float, float, float]:
    """Percentile bootstrap confidence interval of a statistic of N samples.

    Args:
      values: array-like [N] (e.g. 0/1 hits).
      seed: seeds the resampling (explicit, so the interval is reproducible).
      n_boot: bootstrap resamples.
      level: coverage, e.g. 0.95.
      statistic: maps a 1-D array to a float; must accept an ``axis`` keyword when it
        is ``np.mean`` (vectorised path), any other callable is applied per resample.

    Returns:
      ``(estimate, low, high)``: the statistic on ``values`` and the
      ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of its bootstrap
      distribution. For N = 0 all three are NaN.

    >>> est, lo, hi = bootstrap_ci([1, 1, 1, 1], seed=0)
    >>> (est, lo, hi)
    (1.0, 1.0, 1.0)
    """
    x = np.asarray(values, np.float64).ravel()
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, (n_boot, x.size))
    if statistic is np.mean:
        stats = x[idx].mean(axis=1)
    else:
        stats = np.array([statistic(x[r]) for r in idx])
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(statistic(x)), float(lo), float(hi)


def hit_table(rankings: Sequence[Sequence[str]], truths: Sequence, meaning: Mapping[str, Truth],
              *, ks: Sequence[int] = (1, 3), seed: int = 0, n_boot: int = 2000,
              level: float = 0.95) -> dict[str, dict[str, float]]:
    """hit@k with bootstrap CIs for several k.

    Returns:
      ``{"hit@1": {"rate", "low", "high", "n"}, ...}``.
    """
    out = {}
    for k in ks:
        h = hits_at_k(rankings, truths, meaning, k)
        rate, lo, hi = bootstrap_ci(h, seed=seed, n_boot=n_boot, level=level)
        out[f"hit@{k}"] = {"rate": rate, "low": lo, "high": hi, "n": int(h.size)}
    return out
