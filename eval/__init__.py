"""Evaluation of textual explanations: pure metrics (:mod:`texter_jax.eval.metrics`) apart
from the plumbing of ``texter eval`` (:mod:`texter_jax.eval.runner` with
:mod:`texter_jax.eval.methods`, :mod:`texter_jax.eval.producers`,
:mod:`texter_jax.eval.scoring`, :mod:`texter_jax.eval.run_report`;
:mod:`texter_jax.cli.eval_cli`);
model and unit randomisation for the sanity checks (:mod:`texter_jax.eval.sanity`); world
evaluation sets (:mod:`texter_jax.world.eval_set`). Never imports torch."""
