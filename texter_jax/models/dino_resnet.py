"""DINO ResNet-50: a self-supervised torchvision ResNet-50 with a linear ImageNet head.

DINO (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers",
https://arxiv.org/abs/2104.14294) releases the ResNet-50 backbone as a torchvision state
dict without ``fc``, and the linear probe of its ``eval_linear`` separately
(``LinearClassifier``: ``linear.weight`` [C, 2048], ``linear.bias`` [C], trained on the
frozen 2048-d average-pooled features). Backbone + probe is therefore exactly a ResNet
classifier; this family only records where the two parts came from, and shares the
module, the variable layout and the ``features`` split (2048-d avgpool) with
:mod:`texter_jax.models.resnet`.
"""

from __future__ import annotations

from typing import Any

from texter_jax.classifier import Classifier
from texter_jax.models.resnet import ResNetConfig, config_from_dict, make_classifier

FAMILY = "dino_resnet"


def default_config(num_classes: int = 1000) -> ResNetConfig:
    """DINO's backbone: torchvision ResNet-50 (v1.5)."""
    return ResNetConfig.from_depth(50, num_classes=num_classes)


def build(family: str, config: dict[str, Any]) -> Classifier:
    """Registry entry point: ``("dino_resnet", config_dict) -> Classifier``."""
    if family != FAMILY:
        raise ValueError(f"texter_jax.models.dino_resnet builds family {FAMILY!r}, "
                         f"not {family!r}")
    return make_classifier(config_from_dict(config), family)
