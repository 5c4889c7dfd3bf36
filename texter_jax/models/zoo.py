"""Classifiers by their usual names (``resnet50``, ``vit_b_16``, ``lite0`` ...), with the
published architectures and ImageNet's 1,000 classes, for planning and benchmarks
(weights come from converted checkpoints: :func:`texter_jax.io.checkpoints.load_model`).
"""

from __future__ import annotations

from collections.abc import Callable

from texter_jax.models import dino, dino_resnet, efficientnet_lite, resnet, vit
from texter_jax.models.registry import config_to_dict

# name -> (family, config builder)
_ZOO: dict[str, tuple[str, Callable]] = {
    **{f"resnet{d}": ("resnet", lambda d=d: resnet.ResNetConfig.from_depth(d))
       for d in (18, 34, 50, 101, 152)},
    "vit_b_16": ("vit", vit.ViTConfig),
    "dino_vits8": ("dino_vit", dino.DinoViTConfig),
    "dino_resnet50": ("dino_resnet", dino_resnet.default_config),
    **{f"lite{i}": ("efficientnet_lite",
                    lambda i=i: efficientnet_lite.EfficientNetLiteConfig.from_variant(f"lite{i}"))
       for i in range(5)},
}
NAMES = tuple(_ZOO)


def zoo_spec(name: str) -> tuple[str, dict]:
    """``(family, config dict)`` of a zoo classifier, for the registry's ``build_model``.

    >>> zoo_spec("resnet50")[0]
    'resnet'
    """
    if name not in _ZOO:
        raise ValueError(f"unknown classifier {name!r}; known: {', '.join(NAMES)}")
    family, make = _ZOO[name]
    return family, config_to_dict(make())
