"""Per-stage cost of TEXTER per image on this machine, JAX vs the release's PyTorch step.

Real sizes with random weights: ResNet-50 (torchvision layout, converted), TopK SAE
2048 -> 16384 (k = 1638), aligner 2048 -> 512, CLIP ViT-B/16 text tower, 130 concepts.
Measured side by side in one run:

* stage 1, IG over SAE codes (100 steps), batch 1 and batch B;
* stage 2, one MACO step (6 crops at 224, canvas S) for 1 image and for B images at once
  (vmapped), vs the release-shaped PyTorch step (torchvision ResNet-50 + SAE encode,
  6 crops, NAdam), both with parameter gradients on (as the release leaves them) and
  input-only;
* stage 3, concept-image crops -> features -> aligner -> retrieval, and the text side
  with and without the embedding cache.

Release settings (512 MACO steps, canvas 1280) are extrapolated from a few timed steps.
Usage::

    .venv/bin/python bench/bench_explain.py [--batch 4] [--canvas 1280] [--steps 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import time

RELEASE_STEPS = 512


def _median(fn, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4, help="B for the batched measurements")
    ap.add_argument("--canvas", type=int, default=1280)
    ap.add_argument("--steps", type=int, default=2, help="MACO steps timed per call")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--concepts", type=int, default=130)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--skip-torch", action="store_true")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from texter_jax import mapping
    from texter_jax.concepts.banks import generic_bank
    from texter_jax.emphasis import MacoConfig, default_spectrum, maco_batch, sae_objective
    from texter_jax.explain import Aligner, Sae, contributions, embed_concept_images, predict
    from texter_jax.models.clip import ClipConfig
    from texter_jax.models.clip import build as build_clip
    from texter_jax.models.registry import config_to_dict
    from texter_jax.models.resnet import ResNetConfig, make_classifier, random_variables
    from texter_jax.sae import SaeConfig, init_sae, sae_encode

    B = args.batch
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}; "
          f"batch B={B}, canvas {args.canvas}, {args.steps} MACO steps timed per call")
    clf = make_classifier(ResNetConfig.from_depth(50))
    variables = jax.tree.map(jnp.asarray, random_variables(clf, 0))
    sae_cfg = SaeConfig.release_default(2048)
    sae = Sae(init_sae(jax.random.key(0), sae_cfg), sae_cfg.top_k)
    rng = np.random.default_rng(0)
    aligner = Aligner(jnp.asarray(rng.normal(size=(512, 2048)) / 45.0, jnp.float32),
                      jnp.zeros(512, jnp.float32))
    images = jnp.asarray(rng.random((B, 224, 224, 3), dtype=np.float32))
    rows = []

    # ---- stage 1
    @functools.partial(jax.jit)
    def stage1(x):
        pred = predict(clf, variables, x)
        return contributions(clf, variables, pred.z, pred.label, sae, steps=100,
                             method="gausslegendre", ranked=16)

    for b in (1, B):
        x = images[:b]
        jax.block_until_ready(stage1(x))
        t = _median(lambda x=x: jax.block_until_ready(stage1(x)), args.reps)
        rows.append((f"stage 1: predict + IG(SAE, 100 steps), batch {b}", t / b))
    ig_per_image = rows[-1][1]

    # ---- stage 2 (JAX)
    magnitude = default_spectrum(args.canvas)
    objective = sae_objective(clf, variables, sae_encode, sae.params, top_k=sae.top_k)
    cfg = MacoConfig(canvas=args.canvas, steps=args.steps, crop_size=clf.image_size)
    units = jnp.tile(jnp.arange(6, dtype=jnp.int32)[None], (B, 1))
    keys = jax.random.split(jax.random.key(0), B)
    maco_step = {}
    for b in (1, B):
        def run(b=b):
            return jax.block_until_ready(
                maco_batch(objective, keys[:b], magnitude, cfg, units[:b]).image)
        t0 = time.perf_counter()
        run()
        compile_s = time.perf_counter() - t0
        t = _median(run, args.reps)
        maco_step[b] = t / args.steps
        rows.append((f"stage 2: MACO step, {b} image(s) at once (compile {compile_s:.0f}s)",
                     maco_step[b] / b))
    speedup = maco_step[1] * B / maco_step[B]
    rows.append((f"stage 2: batched B={B} vs per-image loop speed-up (x)", speedup))

    # ---- stage 3
    maps = jnp.asarray(rng.random((B, args.canvas, args.canvas, 3), dtype=np.float32))
    s3 = jax.jit(lambda k, im, tr: embed_concept_images(clf, variables, aligner, k, im, tr,
                                                        n_crops=6)[0])
    jax.block_until_ready(s3(keys, maps, maps))
    t = _median(lambda: jax.block_until_ready(s3(keys, maps, maps)), args.reps)
    rows.append((f"stage 3: blend + 6 crops + features + aligner, batch {B}", t / B))
    stage3_img = t / B

    clip = build_clip("clip", config_to_dict(ClipConfig()))
    from texter_jax.models.resnet import random_variables as rv

    clip_vars = jax.tree.map(jnp.asarray, rv(clip, 0))
    texts = generic_bank()[:args.concepts]
    ids = jnp.asarray(rng.integers(1, 49000, (len(texts), 77)), jnp.int32)
    enc = jax.jit(lambda i: clip.encode_text(clip_vars, i))
    jax.block_until_ready(enc(ids))
    t_text = _median(lambda: jax.block_until_ready(enc(ids)), args.reps)
    rows.append((f"stage 3: encode {len(texts)} concept texts (no cache)", t_text))
    emb = jnp.asarray(rng.normal(size=(B, 6, 512)), jnp.float32)
    temb = enc(ids)
    ret = jax.jit(mapping.retrieve)
    jax.block_until_ready(ret(emb, temb))
    t_ret = _median(lambda: jax.block_until_ready(ret(emb, temb)), args.reps)
    rows.append(("stage 3: retrieval with cached text embeddings, per image", t_ret / B))

    per_image_release = ig_per_image + RELEASE_STEPS * maco_step[B] / B + stage3_img + t_ret / B
    rows.append((f"release settings ({RELEASE_STEPS} steps, canvas {args.canvas}), "
                 f"batched B={B}: s/image", per_image_release))
    rows.append(("release settings, one image at a time: s/image",
                 ig_per_image + RELEASE_STEPS * maco_step[1] + stage3_img + t_ret / B))

    # ---- the release's PyTorch MACO step, same shapes (bench/release_torch.py)
    if not args.skip_torch:
        import sys

        import torch

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from release_torch import ReleasePipeline

        torch.set_num_threads(args.threads)
        rel = ReleasePipeline(args.canvas, magnitude)
        units_np = np.arange(6)
        for grads in (True, False):
            rel.set_param_grads(grads)
            rel.maco_start()
            rel.maco_step(units_np)
            t = _median(lambda: rel.maco_step(units_np), args.reps)
            label = "with parameter grads (release)" if grads else "input-only"
            rows.append((f"torch: release-shaped MACO step, {label}", t))
        rows.append(("JAX batched MACO step per image vs torch release step (x faster)",
                     rows[-2][1] / (maco_step[B] / B)))

    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:10.3f}")


if __name__ == "__main__":
    main()
