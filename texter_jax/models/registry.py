"""Family name -> model builder, so a converted checkpoint rebuilds its own model.

Converted checkpoints store ``{"family": ..., "config": {...}}``; ``build_model`` turns
that back into a :class:`~texter_jax.classifier.Classifier` or a CLIP model object.
Modules are imported lazily so importing the registry stays cheap.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import jax
import jax.numpy as jnp

# family -> module that defines `build(family, config_dict)`.
FAMILIES: dict[str, str] = {
    "resnet": "texter_jax.models.resnet",
    "efficientnet_lite": "texter_jax.models.efficientnet_lite",
    "vit": "texter_jax.models.vit",
    "dino_vit": "texter_jax.models.dino",
    "dino_resnet": "texter_jax.models.dino_resnet",
    "clip": "texter_jax.models.clip",
    "world_clip": "texter_jax.models.world_clip",
}


class UnknownFamilyError(ValueError):
    pass


def build_model(family: str, config: dict[str, Any]):
    """Rebuilds a model object from its family name and JSON config dict."""
    if family not in FAMILIES:
        raise UnknownFamilyError(
            f"unknown model family {family!r}; supported: {', '.join(sorted(FAMILIES))}"
        )
    module = importlib.import_module(FAMILIES[family])
    return module.build(family, dict(config))


def config_from_dict(cls, config: dict[str, Any]):
    """A family's frozen config dataclass ``cls`` from its JSON dict, naming unknown keys."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(known)}")
    return cls(**config)


def config_to_dict(config) -> dict[str, Any]:
    """A frozen config dataclass -> JSON-ready dict (tuples become lists)."""
    return dataclasses.asdict(config)


def abstract_variables(model) -> Any:
    """Shapes/dtypes of a model's variables without allocating them.

    Works for any model object exposing ``dummy_inputs()`` (a tuple of arrays for
    ``module.init``) and ``module``.
    """
    inputs = model.dummy_inputs()
    return jax.eval_shape(lambda: model.module.init(jax.random.key(0), *inputs))


def init_variables(model, key: jax.Array) -> Any:
    """Randomly initialised variables for ``model`` (Linen ``init``)."""
    inputs = model.dummy_inputs()
    return model.module.init(key, *inputs)


def zeros_images(batch: int, size: int) -> jax.Array:
    return jnp.zeros((batch, size, size, 3), jnp.float32)
