"""`texter eval`: score TEXTER, its ablations and baselines on an image folder."""

from __future__ import annotations

import argparse

from texter_jax.cli.process_args import add_process_args, process_group
from texter_jax.cli.shared_args import add_bank_args, add_model_args, add_texter_args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate explanations on an image folder: CLIP score, faithfulness, "
             "sanity checks, hit@k; tables and plots",
        description=(
            "Explain a sample of an ImageFolder tree (<root>/<class>/<image>) with each "
            "method and score every explanation: CLIP score, feature-space directional "
            "derivative, insertion and deletion AUC along the concepts' directions, "
            "ground-truth hit@k (with --truth), and sanity checks (Spearman rho against "
            "explanations of a randomised model / random units). Writes records.jsonl "
            "(resumable), summary.md / summary.csv with bootstrap CIs, and PNG plots."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("images", help="ImageFolder root: <root>/<class folder>/<image>")
    add_model_args(p, sae_help="TopK SAE (needed by method texter)")
    p.add_argument("--out", default="texter_eval", help="run folder (resumes if it exists)")
    p.add_argument("--class-names", default=None,
                   help="class names in index order: .txt, JSON list, {index: name} or "
                        "{index: [wnid, name]}; folders map by name / wnid, else by "
                        "sorted order")
    p.add_argument("--methods", default="texter,texter-nosae,text2concept,random",
                   help="comma list of texter, texter-nosae, text2concept, random "
                        "(random: concepts ranked at random, the chance floor)")
    g = p.add_argument_group("sampling")
    g.add_argument("--per-class", type=int, default=None, help="images per class folder")
    g.add_argument("--total", type=int, default=None, help="images in all (after --per-class)")
    g.add_argument("--seed", type=int, default=0,
                   help="seeds sampling, MACO keys, randomisations and bootstraps")
    g.add_argument("--no-labels", action="store_true",
                   help="unlabelled images (folders are not classes, e.g. Pascal VOC): no "
                        "accuracy or misclassified subset")
    g.add_argument("--preprocess", choices=["imagenet", "resize"], default="imagenet",
                   help="classifier input: imagenet = Resize(S*256/224)+CenterCrop(S); "
                        "resize = Resize(S)+CenterCrop(S)")
    g = p.add_argument_group("TEXTER settings (comma lists = ablations)")
    add_texter_args(g, ablation_lists=True)
    add_bank_args(p.add_argument_group("concept banks"))
    g = p.add_argument_group("metrics")
    g.add_argument("--top-k", type=int, default=5,
                   help="concepts per explanation for CLIP top-k, directional top-k and the "
                        "insertion / deletion curves")
    g.add_argument("--pullback", choices=["pinv", "transpose"], default="pinv",
                   help="CLIP -> feature directions through the aligner: pseudo-inverse or W^T")
    g.add_argument("--direction-center", choices=["bank", "none"], default="bank",
                   help="subtract the mean bank text embedding before pulling back")
    g.add_argument("--baseline", choices=["zeros", "mean"], default="zeros",
                   help="insertion start / deletion target: zero features or the sample mean")
    g.add_argument("--truth", default=None,
                   help="truth.json for hit@k (written by `python -m texter_jax.world.eval_set`)")
    g.add_argument("--hit-k", default="1,3")
    g.add_argument("--sanity", default="head,top,units,seed",
                   help="sanity variants (head, top, units, seed) or none; each re-runs "
                        "MACO per TEXTER image")
    g.add_argument("--sanity-max", type=int, default=200,
                   help="sanity checks on the first N sampled images only")
    g.add_argument("--sanity-top", default=None,
                   help="regex of parameter paths for the 'top' randomisation "
                        "(default: the last numbered block, found automatically)")
    g.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    g.add_argument("--ci", type=float, default=0.95, help="confidence level")
    g = p.add_argument_group("run")
    g.add_argument("--cache", default=None,
                   help="artefact cache folder (default <out>/cache); share it across runs")
    g.add_argument("--limit", type=int, default=None,
                   help="stop after this many new (image, method) records")
    g.add_argument("--no-plots", action="store_true")
    add_process_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from texter_jax.eval.runner import EvalRun

    group = process_group(args, "eval")
    if group is None:
        return 2
    return EvalRun(args, group).run()
