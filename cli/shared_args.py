"""Argument groups that several commands share, with defaults read from the config
dataclasses (:mod:`texter_jax.config`, no JAX), so a default lives in one place."""

from __future__ import annotations

import argparse

from texter_jax.config import PRESETS, ExplainConfig

_RELEASE = ExplainConfig()


def add_model_args(p, *, sae_help: str) -> None:
    """--classifier, --clip, --aligner, --sae: the parts of a session."""
    p.add_argument("--classifier", required=True, help="converted classifier folder")
    p.add_argument("--clip", required=True, help="converted CLIP folder (with tokenizer files)")
    p.add_argument("--aligner", required=True,
                   help="`texter train-aligner` folder or the release's linear_aligner.pth")
    p.add_argument("--sae", default=None, help=sae_help)


def batch_size_arg(text: str):
    """``--batch-size``: a positive int, or ``auto`` (the largest that fits the devices)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number or auto")
    return value


def add_texter_args(g, *, ablation_lists: bool = False, auto_batch: bool = False) -> None:
    """TEXTER's settings. With ``ablation_lists``, --k-neu, --steps, --canvas and --preset
    take comma lists (one run per combination, as ``texter eval`` does); with
    ``auto_batch``, --batch-size also takes ``auto``."""
    maco = _RELEASE.maco
    if ablation_lists:
        g.add_argument("--k-neu", default=str(_RELEASE.k_neu),
                       help="contributing units, e.g. 3,6")
        g.add_argument("--steps", default=str(maco.steps), help="MACO steps, e.g. 128,512")
        g.add_argument("--canvas", default=str(maco.canvas),
                       help="MACO canvas side, e.g. 512,1280")
    else:
        g.add_argument("--k-neu", type=int, default=_RELEASE.k_neu,
                       help="contributing units per image")
        g.add_argument("--steps", type=int, default=maco.steps, help="MACO steps")
        g.add_argument("--canvas", type=int, default=maco.canvas, help="MACO canvas side")
    g.add_argument("--ig-steps", type=int, default=_RELEASE.ig_steps)
    g.add_argument("--crops", type=int, default=maco.n_crops, help="MACO crops per step")
    g.add_argument("--map-crops", type=int, default=_RELEASE.map_crops,
                   help="stage-3 crops per concept image")
    g.add_argument("--spectrum", default=None,
                   help="magnitude template .npy from `texter spectrum` (none: the power law)")
    presets = ", ".join(PRESETS)
    if ablation_lists:
        g.add_argument("--preset", default="release",
                       help=f"comma list of {presets} (fast: MACO's convergence stop)")
    else:
        g.add_argument("--preset", choices=list(PRESETS), default="release",
                       help="release: the release's settings; fast: adds MACO's convergence "
                            "stop (see docs/real_checkpoints.md, 'The fast preset')")
    g.add_argument("--bf16", action="store_true",
                   help="bfloat16 classifier forward/backward inside MACO (fp32 otherwise)")
    if auto_batch:
        g.add_argument("--batch-size", type=batch_size_arg, default=8,
                       help="images per batch, or auto: the largest batch whose compiled "
                            "programs fit 80%% of each device's memory (texter plan's "
                            "memory figures on this machine; default 8)")
    else:
        g.add_argument("--batch-size", type=int, default=8)


def add_bank_args(g) -> None:
    """Where concept texts come from, and the text-embedding cache."""
    g.add_argument("--bank", nargs="*", default=[],
                   help="concept files (.txt one per line, or JSON lists) used for every image")
    g.add_argument("--bank-root", default=None,
                   help="release-layout concept cache (per_class/, per_image/)")
    g.add_argument("--no-generic", action="store_true",
                   help="do not add the shipped generic concept bank")
    g.add_argument("--text-cache", default=None,
                   help="text-embedding cache folder (none: <out>/.text_cache)")
