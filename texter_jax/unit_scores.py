"""Stage 1 on its own, from the explanation's own settings: :func:`unit_contributions`.

:func:`~texter_jax.explain.explain_batch` keeps only the units it emphasises. To look at
every unit's integrated-gradients contribution (every feature, or every SAE code), or
to check completeness, call this with the same ``ExplainConfig``: it reads ``ig_steps``,
``ig_method``, ``ranked_units``, ``unit_ranking`` and ``use_sae`` from it, so nothing is
repeated by hand, and it returns the target that the contributions add up to.

Completeness: with baseline 0, ``scores.sum(-1) == gap`` up to the quadrature error,
which is zero for a head affine in its input (a linear classifier head; the SAE
decoder is affine too), so there it holds to float32 rounding.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from texter_jax.classifier_check import check_classifier
from texter_jax.config import ExplainConfig
from texter_jax.sae import Sae, sae_decode, sae_encode
from texter_jax.stages import Contributions, Prediction, contributions, predict
from texter_jax.types import Array, ClassifierLike, Variables


class UnitContributions(NamedTuple):
    """What :func:`unit_contributions` returns (device arrays).

    pred: :class:`~texter_jax.stages.Prediction` (z [B, D], logits, probs, label);
    contrib: :class:`~texter_jax.stages.Contributions`, ``scores`` [B, N] for every unit
    (N = D, or the SAE's codes) and the ranking explain_batch uses; class_idx int [B]:
    the class explained; gap float32 [B]: ``F_c(x) - F_c(baseline)``, where ``F_c`` is
    ``head(z)[c]`` (``head(decode(codes))[c]`` with the SAE) and the baseline 0.
    """

    pred: Prediction
    contrib: Contributions
    class_idx: Array
    gap: Array


# The Sae is an argument whole (a pytree, k static in its treedef) or None.
@functools.partial(jax.jit, static_argnames=("classifier", "steps", "method", "ranked",
                                             "ranking"))
def _stage1(classifier, variables, sae, images, class_idx, *, steps, method, ranked,
            ranking):
    pred = predict(classifier, variables, images)
    c = pred.label if class_idx is None else class_idx
    contrib = contributions(classifier, variables, pred.z, c, sae, steps=steps,
                            method=method, ranked=ranked, ranking=ranking)
    if sae is None:
        end, start = pred.z, jnp.zeros_like(pred.z)
    else:
        codes = sae_encode(sae.params, pred.z, sae.top_k)[1]
        end, start = sae_decode(sae.params, codes), sae_decode(sae.params,
                                                               jnp.zeros_like(codes))
    def f(z):
        return jnp.take_along_axis(classifier.head(variables, z), c[:, None], 1)[:, 0]
    return UnitContributions(pred, contrib, c, f(end) - f(start))


def unit_contributions(classifier: ClassifierLike, variables: Variables, images,
                       config: ExplainConfig, *, sae: Sae | None = None,
                       class_idx=None) -> UnitContributions:
    """Every unit's stage-1 contribution for a batch, as ``explain_batch`` computes it.

    Args:
      classifier, variables: the classifier (checked as in ``explain_batch``).
      images: float32 [B, S, S, 3] in [0, 1].
      config: the explanation's settings (the IG and ranking fields are read).
      sae: the SAE when ``config.use_sae``.
      class_idx: int [B], the class to explain; None: each image's prediction.

    Returns:
      :class:`UnitContributions`; ``contrib.scores.sum(-1)`` is ``gap`` by completeness.
    """
    use_sae = config.use_sae
    if use_sae and sae is None:
        raise ValueError("unit_contributions: config.use_sae is True but no SAE was given "
                         "(pass sae= or use_sae=False)")
    check_classifier(classifier, variables, sae=sae if use_sae else None,
                     caller="unit_contributions")
    images = jnp.asarray(images, jnp.float32)
    if class_idx is not None:
        class_idx = jnp.asarray(class_idx, jnp.int32)
    return _stage1(classifier, variables, sae if use_sae else None, images, class_idx,
                   steps=config.ig_steps, method=config.ig_method,
                   ranked=config.ranked_units, ranking=config.unit_ranking)
