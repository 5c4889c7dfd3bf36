"""The fast preset against the release's settings: same images, same models, same seed.

Real-size classifier with random weights (ResNet-``--depth``, its TopK SAE at the
release's recipe n = 8d, k = n/10, an aligner to 512-d), ``--images`` random images and
``--concepts`` random text embeddings. Three runs of ``explain_batch``:

* ``release``: ``ExplainConfig()`` (512 MACO steps, canvas 1280, 6 crops);
* ``release, other seed``: the same with other per-image keys: the noise floor (how much
  two release runs of one image agree);
* ``fast``: ``ExplainConfig.preset("fast")`` with the release's keys.

Per image, against the release run: the final MACO objective (as a fraction of the
release's), the Pearson correlation of the concept images, the top-5 concept overlap and
the Spearman rank correlation of all concept scores; MACO steps run; seconds per image
(wall, batch ``--batch``, compile included)::

    .venv/bin/python bench/fast_preset.py [--depth 18] [--images 4] [--canvas 1280]
"""

from __future__ import annotations

import argparse
import time


def _spearman(a, b) -> float:
    import numpy as np

    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=18)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--canvas", type=int, default=1280)
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--concepts", type=int, default=130)
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args()


    import jax
    import jax.numpy as jnp
    import numpy as np
    from tqdm import tqdm

    from texter_jax.emphasis import MacoConfig, default_spectrum, final_objective
    from texter_jax.emphasis.progress import increments
    from texter_jax.explain import Aligner, ExplainConfig, Sae, explain_batch, image_keys
    from texter_jax.models.resnet import ResNetConfig, make_classifier, random_variables
    from texter_jax.sae import SaeConfig, init_sae

    clf = make_classifier(ResNetConfig.from_depth(args.depth))
    variables = jax.tree.map(jnp.asarray, random_variables(clf, 0))
    d = clf.feature_dim
    sae_cfg = SaeConfig.release_default(d)
    sae = Sae(init_sae(jax.random.key(0), sae_cfg), sae_cfg.top_k)
    rng = np.random.default_rng(0)
    aligner = Aligner(jnp.asarray(rng.normal(size=(512, d)) / np.sqrt(d), jnp.float32),
                      jnp.zeros(512, jnp.float32))
    text = jnp.asarray(rng.normal(size=(args.concepts, 512)), jnp.float32)
    images = rng.random((args.images, 224, 224, 3), dtype=np.float32)
    magnitude = default_spectrum(args.canvas)
    maco = MacoConfig(canvas=args.canvas, steps=args.steps)
    runs = {"release": (ExplainConfig(maco=maco), 0),
            "release, other seed": (ExplainConfig(maco=maco), 1),
            "fast": (ExplainConfig.preset("fast", maco=maco), 0)}
    print(f"ResNet-{args.depth} (random) + SAE {d}->{sae_cfg.nb_concepts} (k={sae_cfg.top_k}), "
          f"{args.images} images, {args.concepts} concepts, canvas {args.canvas}, "
          f"{args.steps} steps, batch {args.batch}; jax {jax.__version__} on "
          f"{jax.devices()[0].device_kind}", flush=True)
    out = {}
    for name, (cfg, seed) in runs.items():
        bar = tqdm(total=args.steps * -(-args.images // args.batch), desc=name, unit="step")
        parts, t0 = [], time.perf_counter()
        progress = increments(bar.update)
        for s in range(0, args.images, args.batch):
            idx = range(s, min(s + args.batch, args.images))
            parts.append(explain_batch(clf, variables, aligner, text, images[list(idx)],
                                       image_keys(seed, idx), cfg, sae=sae,
                                       magnitude=magnitude, progress=progress))
        bar.close()
        wall = time.perf_counter() - t0
        scores = np.concatenate([p.concept_scores for p in parts])
        trace = np.concatenate([p.objective_trace for p in parts])
        out[name] = {"scores": scores, "steps": (~np.isnan(trace)).sum(1),
                     "seconds": wall / args.images, "units": np.concatenate(
                         [p.unit_ids for p in parts]),
                     "objective": np.asarray(final_objective(trace)),
                     "image": np.concatenate([p.concept_image for p in parts])}
    ref = out["release"]
    print(f"\n| run | MACO steps run (per image) | s/image (incl. compile) | final objective "
          f"/ release's | concept image corr. with release's | top-{args.top} overlap vs "
          f"release, mean [min, max] | Spearman vs release, mean [min, max] |")
    print("|---|---|---|---|---|---|---|")
    for name, r in out.items():
        overlap, rho, corr = [], [], []
        ratio = r["objective"] / ref["objective"]
        for i in range(args.images):
            corr.append(float(np.corrcoef(r["image"][i].ravel(), ref["image"][i].ravel())[0, 1]))
            top_ref = set(np.argsort(-ref["scores"][i])[:args.top])
            top = set(np.argsort(-r["scores"][i])[:args.top])
            overlap.append(len(top_ref & top) / args.top)
            rho.append(_spearman(ref["scores"][i], r["scores"][i]))
        def fmt(x):
            return f"{np.mean(x):.3f} [{np.min(x):.3f}, {np.max(x):.3f}]"
        print(f"| {name} | {', '.join(map(str, r['steps']))} | {r['seconds']:.1f} | "
              f"{fmt(ratio)} | {fmt(corr)} | {fmt(overlap)} | {fmt(rho)} |")
    same_units = all(np.array_equal(out[n]["units"], ref["units"]) for n in out)
    print(f"\nstage-1 units identical across runs: {same_units}")


if __name__ == "__main__":
    main()
