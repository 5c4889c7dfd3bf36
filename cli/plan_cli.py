"""``texter plan``: compile ``explain``'s programs for a TPU slice or this machine's devices
and estimate memory per device, throughput and the largest batch that fits."""

from __future__ import annotations

import argparse

from texter_jax.config import ExplainConfig

_RELEASE = ExplainConfig()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plan",
        help="compile explain's programs for a TPU topology or the local devices: memory "
             "per device, cost and a roofline estimate",
        description=(
            "Compiles the programs `texter explain` runs (stage 1, the MACO loop, stage 3, "
            "retrieval), split over one host's devices of the target as explain splits "
            "them, with abstract weights (nothing is downloaded or allocated). Prints per "
            "device the bytes each program needs and whether they fit, the compiler's "
            "flops and bytes accessed per image, and a roofline ESTIMATE of throughput "
            "from published peaks (not a measurement). TPU topologies compile on any "
            "machine with libtpu installed (pip install \"jax[tpu]\")."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: texter plan --classifier resnet50 --tpu v5e:2x2 --batch 1 8 "
               "--dtype float32,bfloat16 --max-batch")
    p.add_argument("--classifier", default="resnet50",
                   help="a zoo name (resnet18/50/101, vit_b_16, dino_vits8, dino_resnet50, "
                        "lite0..lite4) or a converted classifier folder (default resnet50)")
    p.add_argument("--no-sae", action="store_true", help="explain the features, no SAE")
    p.add_argument("--sae-expansion", type=int, default=8,
                   help="SAE codes per feature (release: 8; k = codes / 10)")
    p.add_argument("--clip-dim", type=int, default=512, help="CLIP embedding size")
    p.add_argument("--texts", type=int, default=130, help="concepts per bank")
    maco = _RELEASE.maco
    p.add_argument("--steps", type=int, default=maco.steps, help="MACO steps")
    p.add_argument("--canvas", type=int, default=maco.canvas, help="MACO canvas side")
    p.add_argument("--crops", type=int, default=maco.n_crops, help="MACO crops per step")
    p.add_argument("--map-crops", type=int, default=_RELEASE.map_crops)
    p.add_argument("--ig-steps", type=int, default=_RELEASE.ig_steps)
    p.add_argument("--tpu", action="append", default=[], metavar="TOPOLOGY",
                   help="a TPU slice, e.g. v5e:2x2, v5p:2x2x1, v6e:4x4 (repeatable)")
    p.add_argument("--local", action="store_true",
                   help="the running backend's devices (the default without --tpu)")
    p.add_argument("--batch", type=int, nargs="+", default=[1],
                   help="images per device (default 1)")
    p.add_argument("--max-batch", action="store_true",
                   help="also find the largest batch per device that fits")
    p.add_argument("--margin", type=float, default=0.9,
                   help="fraction of device memory a batch may use (default 0.9)")
    p.add_argument("--dtype", default="float32",
                   help="comma list of float32, bfloat16 (MACO's classifier pass)")
    p.add_argument("--also-chip", default="",
                   help="comma list of chips (h100, h200, v4 ...) to estimate with the same "
                        "cost figures and those chips' peaks (memory is not compiled for them)")
    p.add_argument("--json", default=None, help="also write every figure to this file")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from texter_jax.cli.plan_runner import PlanError, run_plan

    try:
        return run_plan(args)
    except PlanError as e:
        print(f"texter plan: error: {e}", file=sys.stderr)
        return 2
