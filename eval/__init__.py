"""Evaluation of textual explanations: pure metrics (:mod:`eval.metrics`) apart from the
plumbing of ``texter eval`` (:mod:`eval.runner` with :mod:`eval.methods`,
:mod:`eval.producers`, :mod:`eval.scoring`, :mod:`eval.run_report`; :mod:`eval.cli`);
model and unit randomisation for the sanity checks (:mod:`eval.sanity`); world
evaluation sets (:mod:`eval.world_set`). Never imports torch."""
