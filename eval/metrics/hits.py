"""hit@k against a ground truth: does an explanation name the value its decision rests on?

An explanation is a ranked list of concept phrases; ``meaning`` maps each phrase of the
concept bank to the ``(attribute, value)`` it names. An explanation *hits at k* when one
of its top-k phrases names a true value for its image (in the demo world: the value of
the classifier's decision-critical attribute, found by intervention). Phrases outside
``meaning`` name nothing and never hit. CIs are :func:`.bootstrap.bootstrap_ci`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np

from texter_jax.eval.metrics.bootstrap import bootstrap_ci

__all__ = ["Truth", "hit_rates", "hit_table", "hits_at_k", "mean_ci"]

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
        :func:`texter_jax.world.interventions.truth_values` in the demo world.
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
    for i, (ranked, truth) in enumerate(zip(rankings, truths, strict=True)):
        want = _as_truth_set(truth)
        out[i] = any(meaning.get(p) in want for p in list(ranked)[:k])
    return out


def hit_rates(rankings: Sequence[Sequence[str]], truths: Sequence,
              meaning: Mapping[str, Truth], ks: Sequence[int]) -> dict[str, np.ndarray]:
    """``{"hit@k": bool [N]}`` for each k (see :func:`hits_at_k`).

    >>> meaning = {"red": ("colour", "red"), "grass background": ("background", "grass")}
    >>> r = hit_rates([["red", "grass background"]], [(("background", "grass"),)], meaning,
    ...               [1, 2])
    >>> {k: v.tolist() for k, v in r.items()}
    {'hit@1': [False], 'hit@2': [True]}
    """
    return {f"hit@{k}": hits_at_k(rankings, truths, meaning, k) for k in ks}


def mean_ci(values, *, seed: int, n_boot: int = 2000, level: float = 0.95) -> dict[str, float]:
    """``{"rate", "low", "high", "n"}``: the mean of N values [N] with its percentile
    bootstrap CI (:func:`.bootstrap.bootstrap_ci`, key ``jax.random.key(seed)``).

    >>> mean_ci([1.0, 1.0, 1.0], seed=0)
    {'rate': 1.0, 'low': 1.0, 'high': 1.0, 'n': 3}
    """
    x = np.asarray(values, np.float32).ravel()
    if x.size == 0:
        return {"rate": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    rate, lo, hi = bootstrap_ci(jax.random.key(seed), x, n_boot=n_boot, level=level)
    return {"rate": float(rate), "low": float(lo), "high": float(hi), "n": int(x.size)}


def hit_table(rankings: Sequence[Sequence[str]], truths: Sequence, meaning: Mapping[str, Truth],
              *, ks: Sequence[int] = (1, 3), seed: int = 0, n_boot: int = 2000,
              level: float = 0.95) -> dict[str, dict[str, float]]:
    """hit@k with bootstrap CIs for several k: ``{"hit@1": {"rate", "low", "high", "n"}}``.

    >>> meaning = {"red": ("colour", "red"), "star shape": ("shape", "star")}
    >>> t = hit_table([["red", "star shape"]] * 4, [("shape", "star")] * 4, meaning, ks=(1, 2))
    >>> t["hit@1"]["rate"], t["hit@2"]["rate"], t["hit@2"]["n"]
    (0.0, 1.0, 4)
    """
    return {f"hit@{k}": mean_ci(hits_at_k(rankings, truths, meaning, k), seed=seed,
                                n_boot=n_boot, level=level) for k in ks}
