"""Evaluation of textual explanations: pure metrics (:mod:`eval.metrics`) apart from the
plumbing of ``texter eval`` (:mod:`eval.runner`, :mod:`eval.cli`); explanation producers
for the sanity checks (:mod:`eval.pipeline`, :mod:`eval.sanity`); world evaluation sets
(:mod:`eval.world_set`). Never imports torch."""
