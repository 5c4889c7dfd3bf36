"""Ground-truth hit@k on the procedural world (scorer of :mod:`texter_jax.world.scoring`).

An explanation hits at k when one of its top-k concepts names the value, in that image,
of the attribute the classifier's decision measurably depends on (found by intervention,
:func:`texter_jax.world.interventions.measure_interventions`). This module only adapts
the world's scorer to the runner's records; the definition lives there.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from texter_jax.world.scoring import Truth, hits_at_k

__all__ = ["Truth", "hit_rates", "hits_at_k"]


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
