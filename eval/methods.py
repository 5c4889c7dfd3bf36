"""The methods ``texter eval`` compares: names, the ablation grid, and their identities.

A :class:`MethodSpec` is one column of the report: a base method (:data:`METHODS`) and,
for TEXTER, one :class:`~texter_jax.explain.ExplainConfig` of the grid the flags span
(every k_neu x steps x canvas x preset combination).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from texter_jax.emphasis import MacoConfig
from texter_jax.explain import PRESETS, ExplainConfig

METHODS = ("texter", "texter-nosae", "text2concept", "random")
TEXTER_METHODS = ("texter", "texter-nosae")


class EvalSetupError(ValueError):
    """Arguments, models or data do not fit; the message says which."""


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One evaluated method: ``label`` in tables, ``base`` in :data:`METHODS`."""

    label: str
    base: str
    config: Any  # ExplainConfig for TEXTER methods, else None
    params: dict


def int_list(text: str | int | None, name: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4] for the flag ``--name`` (positive integers)."""
    if text is None:
        return []
    if isinstance(text, int):
        return [text]
    try:
        vals = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise EvalSetupError(f"--{name} takes comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise EvalSetupError(f"--{name} needs positive integers, got {text!r}")
    return vals


def method_bases(text: str) -> list[str]:
    """The base methods named in ``--methods``, in order, checked."""
    names = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise EvalSetupError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    return names


def method_specs(args, image_size: int) -> list[MethodSpec]:
    """Methods x ablations from the flags (TEXTER methods get every k_neu x steps x
    canvas combination; a parameter appears in the label when it takes >1 value)."""
    names = method_bases(args.methods)
    presets = [p.strip() for p in str(getattr(args, "preset", "release")).split(",")
               if p.strip()]
    if not presets or set(presets) - set(PRESETS):
        raise EvalSetupError(f"unknown preset(s) in {args.preset!r}; choose from "
                             f"{', '.join(PRESETS)}")
    grid = {"k_neu": int_list(args.k_neu, "k-neu"), "steps": int_list(args.steps, "steps"),
            "canvas": int_list(args.canvas, "canvas"), "preset": list(dict.fromkeys(presets))}
    varying = [k for k, v in grid.items() if len(v) > 1]
    specs = []
    for base in names:
        if base not in TEXTER_METHODS:
            specs.append(MethodSpec(base, base, None, {}))
            continue
        for k, s, c, pre in itertools.product(*grid.values()):
            maco = MacoConfig(canvas=c, steps=s, n_crops=args.crops, crop_size=image_size)
            try:
                cfg = ExplainConfig.preset(pre, k_neu=k, ig_steps=args.ig_steps,
                                           use_sae=base == "texter", ranked_units=max(16, k),
                                           maco=maco, map_crops=args.map_crops,
                                           compute_dtype="bfloat16" if args.bf16 else None)
            except ValueError as e:
                raise EvalSetupError(f"--preset {pre} with --steps {s}: {e}") from e
            params = {"k_neu": k, "steps": s, "canvas": c, "preset": pre}
            label = base if not varying else base + "[" + ",".join(
                f"{v}={params[v]}" for v in varying) + "]"
            specs.append(MethodSpec(label, base, cfg, params))
    return specs


def config_dict(cfg) -> dict:
    """An ExplainConfig as the dict its records' hashes are made from."""
    if cfg is None:
        return {}
    d = dataclasses.asdict(cfg)
    if cfg.maco.stop_rtol is None:  # no stopping rule: hashes as before the rule existed
        for k in ("stop_rtol", "stop_window", "stop_min_steps"):
            d["maco"].pop(k)
    return d
