"""Building blocks shared by the ViT converters (:mod:`texter_jax.converters.vit`).

Rule builders for the torch -> Flax key tables of ``vit`` / ``dino_vit`` (dense, norm,
packed q|k|v, patch/class/position embeddings), the readers that infer an architecture
from tensor shapes (block count, image size, head count), key-prefix stripping, and
the last step that applies a table to a state dict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np

from texter_jax.converters.mapping import (
    ConversionError,
    Converted,
    Rule,
    apply_rules,
    conv_kernel,
    linear_kernel,
)
from texter_jax.models.registry import abstract_variables, config_to_dict

# Heads of the published torchvision ViTs, keyed by width; the head count is not in
# the weights. HF ViTs of these widths (bare state dicts) use the same counts.
TORCHVISION_HEADS = {768: 12, 1024: 16, 1280: 16}  # vit_b, vit_l, vit_h


def _rows(i: int, n: int) -> Callable[[np.ndarray], np.ndarray]:
    """Slice ``i`` of ``n`` equal row blocks (packed q|k|v), as Flax Dense param."""
    def f(w: np.ndarray) -> np.ndarray:
        part = np.split(w, n, axis=0)[i]
        return linear_kernel(part) if part.ndim == 2 else part
    return f


def dense_rules(torch_prefix: str, flax_path: tuple[str, ...], bias: bool = True) -> list[Rule]:
    rules = [Rule(f"{torch_prefix}.weight", ("params", *flax_path, "kernel"), linear_kernel)]
    if bias:
        rules.append(Rule(f"{torch_prefix}.bias", ("params", *flax_path, "bias")))
    return rules


def norm_rules(torch_prefix: str, flax_path: tuple[str, ...]) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", ("params", *flax_path, "scale")),
            Rule(f"{torch_prefix}.bias", ("params", *flax_path, "bias"))]


def packed_qkv_rules(torch_w: str, torch_b: str | None, block: str) -> list[Rule]:
    rules = []
    for i, name in enumerate(("query", "key", "value")):
        rules.append(Rule(torch_w, ("params", block, "attn", name, "kernel"), _rows(i, 3)))
        if torch_b is not None:
            rules.append(Rule(torch_b, ("params", block, "attn", name, "bias"), _rows(i, 3)))
    return rules


def embedding_rules(conv: str, cls: str, pos: str) -> list[Rule]:
    return [Rule(f"{conv}.weight", ("params", "patch_embed", "kernel"), conv_kernel),
            Rule(f"{conv}.bias", ("params", "patch_embed", "bias")),
            Rule(cls, ("params", "cls_token")),
            Rule(pos, ("params", "pos_embed"))]


def require_keys(sd: dict[str, np.ndarray], keys: list[str], source: str, layout: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise ConversionError(
            f"cannot convert {source} as {layout}: missing keys needed to infer the "
            f"architecture: {', '.join(missing)}", missing=missing)


def count_blocks(sd: dict[str, np.ndarray], pattern: str) -> int:
    rx = re.compile(pattern)
    ids = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    if not ids:
        return 0
    return max(ids) + 1


def grid_image_size(pos_shape: tuple[int, ...], patch: int, source: str) -> int:
    side = math.isqrt(pos_shape[1] - 1)
    if side * side != pos_shape[1] - 1:
        raise ConversionError(
            f"{source}: position embeddings {pos_shape} do not form a square grid "
            "(non-square inputs are not supported)")
    return side * patch


def head_count(width: int, table: dict[int, int] | None, given: int | None, source: str,
               what: str, *, flag: str = "--num-heads", head_size: int | None = None) -> int:
    """Attention heads of a transformer of ``width``: ``given`` (checked to divide the
    width), else the published size's count from ``table``, else ``width // head_size``
    when a fixed head size is the family's rule (OpenAI CLIP: 64) and divides the width;
    otherwise a ConversionError that asks for ``flag``."""
    if given is not None:
        if int(given) < 1 or width % int(given):
            raise ConversionError(f"{source}: {flag} {given} does not divide the {what}'s "
                                  f"width {width}")
        return int(given)
    if table and width in table:
        return table[width]
    if head_size and width % head_size == 0:
        return width // head_size
    rule = (f"is not a multiple of {head_size} (the family's head size)" if head_size
            else f"is not a published size ({sorted(table or ())})")
    raise ConversionError(
        f"{source}: the number of attention heads of a {what} with width {width} cannot be "
        f"read from the weights: the width {rule}; pass {flag} N (num_heads= in Python) "
        f"with N a divisor of {width}")


def check_num_classes(found: int, wanted: int | None, source: str) -> None:
    if wanted is not None and int(wanted) != found:
        raise ConversionError(
            f"{source}: the checkpoint's head has {found} classes, not the {wanted} asked for")


def strip_prefixes(sd: dict[str, np.ndarray], prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Removes leading wrapper prefixes (DDP ``module.``, DINO ``backbone.``)."""
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def convert_with_rules(family: str, layout: str, cfg, module_build, sd, rules, source: str,
                       **kw) -> Converted:
    model = module_build(family, config_to_dict(cfg))
    variables = apply_rules(sd, rules, abstract_variables(model), source=source, **kw)
    return Converted(family=family, config=config_to_dict(cfg), variables=variables,
                     layout=layout)
