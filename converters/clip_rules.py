"""Pieces shared by the CLIP converters (:mod:`texter_jax.converters.clip_hf`,
:mod:`texter_jax.converters.clip_openai`).

Rule builders for LayerNorm and Dense parameters, the expected (abstract) variables of a
:class:`~texter_jax.models.clip.ClipConfig`, and config construction that reports an
unsupported architecture as a :class:`~texter_jax.converters.mapping.ConversionError`.
"""

from __future__ import annotations

from typing import Any

from texter_jax.converters.mapping import ConversionError, Rule, linear_kernel
from texter_jax.models import clip as clip_model
from texter_jax.models.registry import abstract_variables, config_to_dict


def expected_variables(cfg: clip_model.ClipConfig):
    return abstract_variables(clip_model.build(clip_model.FAMILY, config_to_dict(cfg)))


def ln_rules(torch_prefix: str, flax_path: tuple[str, ...]) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", (*flax_path, "scale")),
            Rule(f"{torch_prefix}.bias", (*flax_path, "bias"))]


def dense_rules(torch_prefix: str, flax_path: tuple[str, ...]) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", (*flax_path, "kernel"), linear_kernel),
            Rule(f"{torch_prefix}.bias", (*flax_path, "bias"))]


def make_config(**fields: Any) -> clip_model.ClipConfig:
    try:
        return clip_model.ClipConfig(**fields)
    except ValueError as e:
        raise ConversionError(f"unsupported CLIP architecture: {e}") from e
