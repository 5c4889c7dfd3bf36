"""`texter explain`: images -> results.json + figure.png per image (TEXTER or baseline)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain",
        help="explain a classifier's decisions on images in words (TEXTER)",
        description=(
            "Explain why the classifier predicts what it does on each image: integrated "
            "gradients pick the units driving the predicted logit, MACO renders them as a "
            "concept image, the aligner maps it into CLIP space and the concept bank is "
            "ranked by cosine. Writes <out>/<image>/results.json and figure.png."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--classifier", required=True, help="converted classifier folder")
    p.add_argument("--clip", required=True, help="converted CLIP folder (with tokenizer files)")
    p.add_argument("--aligner", required=True,
                   help="`texter train-aligner` folder or the release's linear_aligner.pth")
    p.add_argument("--sae", default=None,
                   help="`texter train-sae` folder or the release's sae_model.pth")
    p.add_argument("--no-sae", action="store_true",
                   help="score and emphasise classifier features instead of SAE codes")
    p.add_argument("--method", choices=["texter", "text2concept"], default="texter",
                   help="text2concept: the Text-to-Concept baseline (global features)")
    p.add_argument("--out", default="texter_results", help="output folder")
    p.add_argument("--bank", nargs="*", default=[],
                   help="concept files (.txt one per line, or JSON lists) used for every image")
    p.add_argument("--bank-root", default=None,
                   help="release-layout concept cache (per_class/, per_image/)")
    p.add_argument("--no-generic", action="store_true",
                   help="do not add the shipped generic concept bank")
    p.add_argument("--class-names", default=None,
                   help="class names: .txt (one per line) or .json list / {index: name}")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k-neu", type=int, default=6, help="contributing units per image")
    p.add_argument("--ig-steps", type=int, default=100)
    p.add_argument("--steps", type=int, default=512, help="MACO steps")
    p.add_argument("--canvas", type=int, default=1280, help="MACO canvas side")
    p.add_argument("--crops", type=int, default=6, help="MACO crops per step")
    p.add_argument("--map-crops", type=int, default=6, help="stage-3 crops per concept image")
    p.add_argument("--spectrum", default=None,
                   help="magnitude template .npy from `texter spectrum` (default: power law)")
    p.add_argument("--preset", choices=["release", "fast"], default="release",
                   help="release: the release's settings; fast: adds MACO's convergence stop "
                        "(see README, 'Fast preset')")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 classifier forward/backward inside MACO (fp32 otherwise)")
    p.add_argument("--top", type=int, default=10, help="concepts shown in the figure")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--text-cache", default=None,
                   help="text-embedding cache folder (default: <out>/.text_cache)")
    p.set_defaults(func=run)


def run(args) -> int:
    from apps.explain_runner import ExplainRun

    return ExplainRun.from_args(args).run()
