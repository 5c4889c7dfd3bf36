"""GPU benchmark: TEXTER on N images with ResNet-50 + TopK SAE at release settings.

Random weights (no downloads; the device machine has no network): ResNet-50, SAE
2048 -> 16384 (k = 1638), aligner 2048 -> 512. Runs ``explain_batch`` in fp32 and with
``compute_dtype="bfloat16"`` and prints images/minute, compile time and per-batch time.
Needs only jax[cuda], flax, optax, chex, numpy (no torch)::

    python bench/gpu_explain.py --images 32 --batch 16 [--steps 512 --canvas 1280]

Run once when a GPU is lent; paste the output (and the device line) in the README.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--canvas", type=int, default=1280)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from texter_jax.emphasis import MacoConfig, default_spectrum
    from texter_jax.explain import Aligner, ExplainConfig, Sae, explain_batch, image_keys
    from texter_jax.models.resnet import ResNetConfig, make_classifier, random_variables
    from texter_jax.sae import SaeConfig, init_sae

    dev = jax.devices()[0]
    print(f"device: {dev.device_kind} x{jax.device_count()} ({dev.platform}); jax "
          f"{jax.__version__}; {args.images} images, batch {args.batch}, {args.steps} steps, "
          f"canvas {args.canvas}, 6 crops at 224")
    clf = make_classifier(ResNetConfig.from_depth(50))
    variables = jax.tree.map(jnp.asarray, random_variables(clf, 0))
    sae_cfg = SaeConfig.release_default(2048)
    sae = Sae(init_sae(jax.random.key(0), sae_cfg), sae_cfg.top_k)
    rng = np.random.default_rng(0)
    aligner = Aligner(jnp.asarray(rng.normal(size=(512, 2048)) / 45.0, jnp.float32),
                      jnp.zeros(512, jnp.float32))
    text = jnp.asarray(rng.normal(size=(130, 512)), jnp.float32)
    images = rng.random((args.images, 224, 224, 3), dtype=np.float32)
    magnitude = default_spectrum(args.canvas)
    for dtype in args.dtypes.split(","):
        cfg = ExplainConfig(maco=MacoConfig(canvas=args.canvas, steps=args.steps),
                            compute_dtype=None if dtype == "float32" else dtype)
        t0 = time.perf_counter()
        explain_batch(clf, variables, aligner, text, images[:args.batch],
                      image_keys(0, range(args.batch)), cfg, sae=sae, magnitude=magnitude)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s in range(0, args.images, args.batch):
            n = min(args.batch, args.images - s)
            out = explain_batch(clf, variables, aligner, text, images[s:s + n],
                                image_keys(0, range(s, s + n)), cfg, sae=sae,
                                magnitude=magnitude)
        total = time.perf_counter() - t0
        print(f"{dtype:>9}: first batch (compile + run) {first:7.1f}s | {args.images} images in "
              f"{total:7.1f}s = {60 * args.images / total:7.1f} images/min "
              f"({total / args.images:.2f} s/image); final objective mean "
              f"{float(np.mean(out.objective_trace[:, -1])):.3f}")


if __name__ == "__main__":
    main()
