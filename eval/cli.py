"""`texter eval`: score TEXTER, its ablations and baselines on an image folder."""

from __future__ import annotations

import argparse

from train.process_args import add_process_args, process_group


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
    p.add_argument("--classifier", required=True, help="converted classifier folder")
    p.add_argument("--clip", required=True, help="converted CLIP folder (with tokenizer)")
    p.add_argument("--aligner", required=True,
                   help="`texter train-aligner` folder or the release's linear_aligner.pth")
    p.add_argument("--sae", default=None, help="TopK SAE (needed by method texter)")
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
    g.add_argument("--k-neu", default="6", help="contributing units, e.g. 3,6")
    g.add_argument("--steps", default="512", help="MACO steps, e.g. 128,512")
    g.add_argument("--canvas", default="1280", help="MACO canvas side, e.g. 512,1280")
    g.add_argument("--ig-steps", type=int, default=100)
    g.add_argument("--crops", type=int, default=6, help="MACO crops per step")
    g.add_argument("--map-crops", type=int, default=6, help="stage-3 crops per concept image")
    g.add_argument("--spectrum", default=None, help="MACO magnitude template .npy")
    g.add_argument("--preset", default="release",
                   help="comma list of release, fast (fast: MACO's convergence stop)")
    g.add_argument("--bf16", action="store_true", help="bf16 classifier inside MACO")
    g.add_argument("--batch-size", type=int, default=8)
    g = p.add_argument_group("concept banks")
    g.add_argument("--bank", nargs="*", default=[], help="concept files used for every image")
    g.add_argument("--bank-root", default=None, help="release-layout concept cache")
    g.add_argument("--no-generic", action="store_true", help="no shipped generic bank")
    g.add_argument("--text-cache", default=None,
                   help="text-embedding cache (default <out>/.text_cache)")
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
                   help="truth.json for hit@k (written by `python -m eval.world_set`)")
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
    from eval.runner import EvalRun

    group = process_group(args, "eval")
    if group is None:
        return 2
    return EvalRun(args, group).run()
