"""Adapters: a model from a JAX stack -> ``(classifier, variables)`` for every stage.

* :func:`~texter_jax.adapters.keras_model.from_keras`: Keras 3, JAX backend;
* :func:`~texter_jax.adapters.equinox_model.from_equinox`: Equinox;
* :func:`~texter_jax.adapters.linen_model.from_linen`: Flax Linen, compact modules too;
* :func:`~texter_jax.adapters.nnx_model.nnx_classifier`: Flax NNX.

Each returns a :class:`~texter_jax.classifier.FunctionClassifier` (pure, hashable,
``features`` [B, S, S, 3] in [0, 1] -> [B, D], ``head`` [B, D] -> [B, C]) and the
variables pytree to explain it with, in eval mode. Layers are found by name through one
mechanism, :mod:`texter_jax.capture`; a wrong name lists the layers there are. Keras
and Equinox are imported inside their adapter only. See docs/models.md.
"""
