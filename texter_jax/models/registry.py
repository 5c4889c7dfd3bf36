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
}
# Families defined outside the core (the demo world's CLIP, a user's own model), added by
# :func:`register_family`; their checkpoints record the module, so loading needs no import.
_REGISTERED: dict[str, str] = {}


class UnknownFamilyError(ValueError):
    pass


def register_family(family: str, module: str) -> None:
    """Makes ``family`` buildable: ``module`` defines ``build(family, config_dict)``.

    For model families that live outside the core library; a checkpoint saved with such
    a family names ``module`` (see :func:`family_module`), so it loads without the caller
    importing it first.
    """
    if FAMILIES.get(family, module) != module:
        raise ValueError(f"model family {family!r} is the core's ({FAMILIES[family]})")
    _REGISTERED[family] = module


def family_module(family: str) -> str | None:
    """The module that builds ``family``, or None when it is unknown."""
    return FAMILIES.get(family) or _REGISTERED.get(family)


def build_model(family: str, config: dict[str, Any], *, module: str | None = None):
    """Rebuilds a model object from its family name and JSON config dict.

    ``module`` (recorded in checkpoints of registered families) names the builder when
    ``family`` is not known in this process yet.
    """
    name = family_module(family) or module
    if name is None:
        known = ", ".join(sorted({*FAMILIES, *_REGISTERED}))
        raise UnknownFamilyError(
            f"unknown model family {family!r}; supported: {known} (a family from another "
            "package is added with texter_jax.models.registry.register_family)")
    return importlib.import_module(name).build(family, dict(config))


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
