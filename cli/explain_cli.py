"""`texter explain`: images -> results.json + figure.png per image (TEXTER or baseline)."""

from __future__ import annotations

import argparse

from texter_jax.cli.shared_args import add_bank_args, add_model_args, add_texter_args


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
    add_model_args(p, sae_help="`texter train-sae` folder or the release's sae_model.pth")
    p.add_argument("--no-sae", action="store_true",
                   help="score and emphasise classifier features instead of SAE codes")
    p.add_argument("--method", choices=["texter", "text2concept"], default="texter",
                   help="text2concept: the Text-to-Concept baseline (global features)")
    p.add_argument("--out", default="texter_results", help="output folder")
    p.add_argument("--class-names", default=None,
                   help="class names: .txt (one per line) or .json list / {index: name}")
    p.add_argument("--seed", type=int, default=0)
    add_texter_args(p.add_argument_group("TEXTER settings (release defaults)"),
                    auto_batch=True)
    add_bank_args(p.add_argument_group("concept banks"))
    p.add_argument("--top", type=int, default=10, help="concepts shown in the figure")
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from texter_jax.cli.explain_runner import ExplainRun

    return ExplainRun.from_args(args).run()
