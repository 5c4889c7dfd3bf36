"""Dead latents on real-shaped data: TopK as the release trains it, TopK + AuxK, and
BatchTopK at the same k, two seeds each, on a world classifier's features.

The features are a trained world classifier's (a ``texter demo`` cache holds four, e.g.
``OUT/cache/classifiers/shape``) of freshly rendered world scenes; 10 % are held out. Each
SAE trains with the release recipe (Adam 5e-4, clip 1) at the sizes given, and the table
reports, on the held-out rows (:func:`texter_jax.train.sae_report.sae_report`): dead fraction, R^2,
explained variance, L0::

    python bench/sae_dead_latents.py OUT/cache/classifiers/shape [--images 20000]
        [--expansion 8] [--epochs 20] [--batch 256]

Not a test: the figures depend on the classifier and the settings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("classifier", help="a world classifier folder")
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--aux-k", type=int, default=None, help="AuxK's k_aux (default d / 2)")
    ap.add_argument("--aux-coef", type=float, default=1 / 32)
    ap.add_argument("--dead-after", type=int, default=0, help="rows (0: one epoch)")
    ap.add_argument("--tied-init", action="store_true", help="for the AuxK variant")
    ap.add_argument("--variants", default="topk,auxk,batchtopk")
    args = ap.parse_args()

    import jax
    import numpy as np

    from texter_jax.batching import map_in_batches
    from texter_jax.io.checkpoints import load_model
    from texter_jax.sae import SaeConfig
    from texter_jax.train.sae_report import sae_report
    from texter_jax.train.sae_train import SaeTrainConfig, train_sae
    from texter_jax.world.attributes import sample_attributes
    from texter_jax.world.generator import render
    from texter_jax.world.stack import _Rows

    clf, variables = load_model(args.classifier)
    t = time.perf_counter()
    attrs = sample_attributes(123, args.images)
    images = render(attrs, 123, image_size=clf.image_size) / np.float32(255)
    z = map_in_batches(jax.jit(lambda x: clf.features(variables, x)), images)
    n_train = int(0.9 * len(z))
    train, held = _Rows(z[:n_train]), _Rows(z[n_train:])
    d = z.shape[1]
    base = SaeConfig.release_default(d, expansion=args.expansion)
    print(f"{args.classifier}: {len(z)} feature rows of {d} ({time.perf_counter() - t:.0f} s);"
          f" SAE {d} -> {base.nb_concepts}, k = {base.top_k}, {args.epochs} epochs, batch "
          f"{args.batch}, {len(z) - n_train} rows held out", flush=True)
    aux_k = args.aux_k or d // 2
    aux_name = (f"TopK + AuxK (k_aux {aux_k}, coef {args.aux_coef:.3g}, dead after "
                f"{args.dead_after or 'one epoch'}{', tied init' if args.tied_init else ''})")
    variants = {k: v for k, v in {"topk": ("TopK (release)", "topk", 0),
                                  "auxk": (aux_name, "topk", aux_k),
                                  "batchtopk": ("BatchTopK", "batchtopk", 0)}.items()
                if k in args.variants.split(",")}
    print("| variant | seed | dead (held out) | dead (last epoch, training) | R^2 | "
          "explained variance | L0 | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name, activation, k_aux in variants.values():
        for seed in args.seeds:
            cfg = SaeConfig(d, base.nb_concepts, base.top_k, activation)
            t = time.perf_counter()
            with tempfile.TemporaryDirectory() as out:
                r = train_sae(train, out, sae_config=cfg, progress=False, verbose=False,
                              train_config=SaeTrainConfig(
                                  epochs=args.epochs, batch_size=args.batch, seed=seed,
                                  aux_k=k_aux, aux_coef=args.aux_coef,
                                  dead_after=args.dead_after if k_aux else 0,
                                  tied_init=args.tied_init and bool(k_aux),
                                  checkpoint_every=0))
            m, _ = sae_report(r.params, held, cfg.top_k)
            print(f"| {name} | {seed} | {m['dead']:.3f} | {r.logs[-1]['dead']:.3f} | "
                  f"{m['r2']:.3f} | {m['explained_variance']:.3f} | {m['l0']:.1f} | "
                  f"{time.perf_counter() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
