"""Seconds per image: the release-shaped PyTorch pipeline and ours, side by side.

Same shapes for both (ResNet-50 + TopK SAE 2048 -> 16384, k = 1638, aligner 2048 -> 512,
canvas S, 6 crops at 224, IG 100 steps, 130 concepts with cached text embeddings), random
weights, one process per thread count, pinned to that many cores (JAX's thread pool and
torch's both follow it). Per thread count:

* the release (``bench/release_torch.py``), one image at a time, weight gradients on as
  the release leaves them, and its MACO step with input gradients only;
* ours, ``explain_batch`` as a user calls it, for 1 image and for B at once. MACO's step
  time comes from its progress listener (the median gap between steps), the rest of the
  call (stage 1, compile-free, and stage 3) from the call's wall time minus the steps.

Whole-image time at ``--release-steps`` (512) is extrapolated from ``--steps`` timed
steps: fixed stages + 512 x step. The release's re-encoding of the concept texts on
every image (~6.5 s here, TEXTER_SPEC) is left out of its figure, which favours it.
Run on an otherwise idle machine::

    .venv/bin/python bench/compare_release.py [--threads 1 2] [--canvas 1280] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from itertools import pairwise

HERE = os.path.dirname(os.path.abspath(__file__))


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def child(args) -> dict:
    """Everything measured with ``args.threads`` cores; returns seconds (floats)."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.threads]))
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    sys.path.insert(0, HERE)
    from release_torch import ReleasePipeline

    from texter_jax.emphasis import MacoConfig, default_spectrum, maco_progress
    from texter_jax.explain import Aligner, ExplainConfig, Sae, explain_batch, image_keys
    from texter_jax.models.resnet import ResNetConfig, make_classifier, random_variables
    from texter_jax.sae import SaeConfig, init_sae

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = rng.random((args.batch, 224, 224, 3), dtype=np.float32)
    text = rng.normal(size=(args.concepts, 512)).astype(np.float32)
    magnitude = default_spectrum(args.canvas)
    out: dict = {"threads": args.threads}

    # ---- the release, one image at a time
    rel = ReleasePipeline(args.canvas, magnitude)
    rel.stage1(images[0])
    out["release_stage1"] = _median([_timed(lambda: rel.stage1(images[0]))[0]
                                     for _ in range(2)])
    units = rel.stage1(images[0])
    for grads in (True, False):
        rel.set_param_grads(grads)
        rel.maco_start()
        rel.maco_step(units)
        steps = [_timed(lambda: rel.maco_step(units))[0] for _ in range(args.steps)]
        out["release_step" if grads else "release_step_input_only"] = _median(steps)
    rel.set_param_grads(True)
    img, trans = rel.maco_image()
    rel.stage3(img, trans, text)
    out["release_stage3"] = _median([_timed(lambda: rel.stage3(img, trans, text))[0]
                                     for _ in range(2)])

    # ---- ours
    clf = make_classifier(ResNetConfig.from_depth(50))
    variables = jax.tree.map(jnp.asarray, random_variables(clf, 0))
    sae_cfg = SaeConfig.release_default(2048)
    sae = Sae(init_sae(jax.random.key(0), sae_cfg), sae_cfg.top_k)
    aligner = Aligner(jnp.asarray(rng.normal(size=(512, 2048)) / 45.0, jnp.float32),
                      jnp.zeros(512, jnp.float32))
    cfg = ExplainConfig(maco=MacoConfig(canvas=args.canvas, steps=args.steps))
    for b in sorted({1, args.batch}):
        def call(b=b):
            return explain_batch(clf, variables, aligner, text, images[:b],
                                 image_keys(0, range(b)), cfg, sae=sae, magnitude=magnitude)
        compile_s, _ = _timed(call)  # compiles; its timing is reported apart
        stamps: list[float] = []
        with maco_progress(lambda t, stamps=stamps: stamps.append(time.perf_counter())):
            wall, _ = _timed(call)
        step = _median([b2 - a for a, b2 in pairwise(stamps)])
        out[f"ours_b{b}_step"] = step
        out[f"ours_b{b}_fixed"] = max(wall - args.steps * step, 0.0)
        out[f"ours_b{b}_first_call"] = compile_s
    return out


def _timed(fn):
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def report(rows: list[dict], args) -> None:
    n = args.release_steps
    print(f"canvas {args.canvas}, 6 crops at 224, ResNet-50 + SAE, IG 100 steps, "
          f"{args.concepts} cached concepts; {args.steps} MACO steps timed, whole image at "
          f"{n} steps extrapolated; ours batched B={args.batch}")
    for r in rows:
        b = args.batch
        rel_img = r["release_stage1"] + n * r["release_step"] + r["release_stage3"]
        ours1 = r["ours_b1_fixed"] + n * r["ours_b1_step"]
        oursb = (r[f"ours_b{b}_fixed"] + n * r[f"ours_b{b}_step"]) / b
        lines = [
            ("MACO step, release (weight grads on)", r["release_step"], None),
            ("MACO step, torch input gradients only", r["release_step_input_only"], None),
            ("MACO step, ours batch 1", r["ours_b1_step"],
             r["ours_b1_step"] / r["release_step"]),
            (f"MACO step per image, ours batch {b}", r[f"ours_b{b}_step"] / b,
             r[f"ours_b{b}_step"] / b / r["release_step"]),
            ("release stage 1 (IG) + stage 3 (image side)",
             r["release_stage1"] + r["release_stage3"], None),
            ("ours batch 1, everything but the MACO steps", r["ours_b1_fixed"], None),
            (f"whole image at {n} steps, release", rel_img, None),
            (f"whole image at {n} steps, ours batch 1", ours1, ours1 / rel_img),
            (f"whole image at {n} steps, ours batch {b} (per image)", oursb, oursb / rel_img),
        ]
        print(f"\n{r['threads']} thread(s)            seconds   ours/release")
        for name, sec, ratio in lines:
            print(f"  {name:<52} {sec:9.3f}   {'' if ratio is None else f'{ratio:.2f}'}")
        print(f"  (ours' first call, compile included: batch 1 {r['ours_b1_first_call']:.0f} s, "
              f"batch {b} {r[f'ours_b{b}_first_call']:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--canvas", type=int, default=1280)
    ap.add_argument("--steps", type=int, default=6, help="MACO steps timed per run")
    ap.add_argument("--release-steps", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4, help="B for ours, batched")
    ap.add_argument("--concepts", type=int, default=130)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(argparse.Namespace(**{**vars(args),
                                                     "threads": args.threads[0]}))))
        return
    if max(args.threads) > len(os.sched_getaffinity(0)):
        sys.exit(f"compare_release: --threads {max(args.threads)} but only "
                 f"{len(os.sched_getaffinity(0))} cores are available")
    rows = []
    for t in args.threads:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--threads", str(t),
               "--canvas", str(args.canvas), "--steps", str(args.steps),
               "--batch", str(args.batch), "--concepts", str(args.concepts)]
        env = {**os.environ, "OMP_NUM_THREADS": str(t), "MKL_NUM_THREADS": str(t)}
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode:
            sys.exit(f"compare_release: the {t}-thread run failed:\n{res.stderr[-2000:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    report(rows, args)


if __name__ == "__main__":
    main()
