"""`texter demo`: TEXTER end to end in the procedural world, scored against known truth."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole method in a procedural world and score it against truth",
        description=(
            "Trains a small CLIP and four classifiers with different decision rules in a "
            "procedural world of whole images, close-ups and wide shots (nothing is "
            "downloaded), measures each classifier's decision-critical attribute by "
            "intervention, trains aligners and SAEs, checks that stage 3's reader can name "
            "the truth on canvases that plainly show it (reader controls), explains "
            "held-out images with TEXTER (with and without SAE), Text-to-Concept and a "
            "class-logit ablation, and writes <out>/report.md with hit@1/hit@3. Trained "
            "artefacts are cached in <out>/cache: a second run takes seconds."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from_defaults = _defaults()
    p.add_argument("--out", default=from_defaults["out"])
    p.add_argument("--image-size", type=int, default=from_defaults["image_size"])
    p.add_argument("--clip-steps", type=int, default=from_defaults["clip_steps"])
    p.add_argument("--train-images", type=int, default=from_defaults["train_images"],
                   help="classifier training images")
    p.add_argument("--feature-images", type=int, default=from_defaults["feature_images"],
                   help="images per classifier for the aligner and SAE")
    p.add_argument("--explain-images", type=int, default=from_defaults["explain_images"],
                   help="held-out images explained per classifier and method")
    p.add_argument("--maco-steps", type=int, default=from_defaults["maco_steps"])
    p.add_argument("--canvas", type=int, default=from_defaults["canvas"])
    p.add_argument("--preset", choices=("release", "fast"), default=from_defaults["preset"],
                   help="TEXTER settings preset (fast: MACO's convergence stop; --maco-steps "
                        "must be a multiple of 32)")
    p.add_argument("--ig-steps", type=int, default=from_defaults["ig_steps"])
    p.add_argument("--k-neu", type=int, default=from_defaults["k_neu"])
    p.add_argument("--spectrum", choices=("world", "power_law"),
                   default=from_defaults["spectrum"],
                   help="MACO magnitude template: measured on world renders, or the 1/f law")
    p.add_argument("--control-canvases", type=int, default=from_defaults["control_canvases"],
                   help="value canvases per value in the reader controls")
    p.add_argument("--batch-size", type=int, default=from_defaults["batch_size"])
    p.add_argument("--seed", type=int, default=from_defaults["seed"])
    p.add_argument("--bf16", action="store_true",
                   help="also run TEXTER with MACO's classifier pass in bfloat16 on the same "
                        "images (texter-bf16), reported next to float32")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--tiny", action="store_true",
                   help="seconds-scale settings (CI smoke run); other flags are ignored")
    p.set_defaults(func=run)


def _defaults() -> dict:
    import dataclasses

    from texter_jax.world.demo_config import DemoConfig  # no JAX: --help stays fast

    return {f.name: f.default for f in dataclasses.fields(DemoConfig)}


def run(args) -> int:
    import sys
    import time

    from texter_jax.world.demo import DemoConfig, WorldDemo

    try:
        if args.tiny:
            cfg = DemoConfig(out=args.out, seed=args.seed, bf16=args.bf16,
                             progress=not args.no_progress).tiny()
        else:
            cfg = DemoConfig(
                out=args.out, image_size=args.image_size, clip_steps=args.clip_steps,
                train_images=args.train_images, feature_images=args.feature_images,
                explain_images=args.explain_images, maco_steps=args.maco_steps,
                canvas=args.canvas, preset=args.preset, ig_steps=args.ig_steps,
                k_neu=args.k_neu, spectrum=args.spectrum,
                control_canvases=args.control_canvases, batch_size=args.batch_size,
                seed=args.seed, bf16=args.bf16, progress=not args.no_progress)
    except ValueError as e:
        print(f"texter demo: error: {e}", file=sys.stderr)
        return 2
    t = time.perf_counter()
    report = WorldDemo(cfg).run()
    print(f"\nreport: {report.absolute()}  ({time.perf_counter() - t:.0f}s)")
    return 0
