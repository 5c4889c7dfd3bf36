"""Flax model zoo: ResNet, ViT, CLIP (vision + text) and DINO heads.

Every family module exports a frozen config dataclass and ``build(config) -> model``;
``registry.build_model(family, config_dict)`` dispatches on the family name stored in a
converted checkpoint's ``texter_config.json``.
"""
