"""GPU benchmark: TEXTER images/minute and peak memory over batch sizes, fp32 and bf16,
with the release-shaped PyTorch pipeline timed on the same device in the same run.

Random weights at real sizes (the device machine has no network): ResNet-50, TopK SAE
2048 -> 16384 (k = 1638), aligner 2048 -> 512, 130 cached concepts. Each (dtype, batch)
runs in its own process so its peak device memory is its own. ``explain_batch`` runs
``--steps`` and then ``2 * --steps`` MACO steps (each compiled first, then timed); the
step time is the difference over ``--steps`` (no host callback in the loop) and
images/minute is extrapolated to ``--release-steps`` (512) steps plus the rest of the
call. The release (``bench/release_torch.py``) runs one image at a time::

    PYTHONPATH=. python3 bench/gpu_explain.py [--batches 1 2 4 8 16 32 64] [--steps 8]

Test on CPU with tiny sizes first: ``--canvas 256 --batches 1 2 --steps 2 --device cpu``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def _gib(x: float) -> str:
    return "n/a" if x != x else f"{x:6.2f} GiB"  # NaN: the platform reports no memory


def run_ours(args) -> dict:
    """One (dtype, batch) configuration; returns its timings and peak device memory."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from texter_jax.emphasis import MacoConfig, default_spectrum, final_objective
    from texter_jax.explain import Aligner, ExplainConfig, Sae, explain_batch, image_keys
    from texter_jax.models.resnet import ResNetConfig, make_classifier, random_variables
    from texter_jax.sae import SaeConfig, init_sae

    b, dtype = args.batch, args.dtype
    clf = make_classifier(ResNetConfig.from_depth(50))
    variables = jax.tree.map(jnp.asarray, random_variables(clf, 0))
    sae_cfg = SaeConfig.release_default(2048)
    sae = Sae(init_sae(jax.random.key(0), sae_cfg), sae_cfg.top_k)
    rng = np.random.default_rng(0)
    aligner = Aligner(jnp.asarray(rng.normal(size=(512, 2048)) / 45.0, jnp.float32),
                      jnp.zeros(512, jnp.float32))
    text = jnp.asarray(rng.normal(size=(130, 512)), jnp.float32)
    images = rng.random((b, 224, 224, 3), dtype=np.float32)
    def config(steps):
        return ExplainConfig(maco=MacoConfig(canvas=args.canvas, steps=steps),
                             compute_dtype=None if dtype == "float32" else dtype)

    def call(steps):
        return explain_batch(clf, variables, aligner, text, images, image_keys(0, range(b)),
                             config(steps), sae=sae, magnitude=default_spectrum(args.canvas))

    walls = {}
    for steps in (args.steps, 2 * args.steps):
        t0 = time.perf_counter()
        call(steps)  # compiles
        if steps == args.steps:
            first = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = call(steps)
        walls[steps] = time.perf_counter() - t0
    wall = walls[args.steps]
    step = (walls[2 * args.steps] - wall) / args.steps
    fixed = max(wall - args.steps * step, 0.0)
    per_batch = fixed + args.release_steps * step
    stats = jax.devices()[0].memory_stats() or {}
    dev = jax.devices()[0]
    return {"device": f"{dev.device_kind} x{jax.device_count()} ({dev.platform}), jax "
                      f"{jax.__version__}", "dtype": dtype, "batch": b, "step": step,
            "fixed": fixed, "first_call": first,
            "images_per_min": 60 * b / per_batch,
            "peak_gib": stats.get("peak_bytes_in_use", float("nan")) / 2**30,
            "objective": float(np.mean(final_objective(out.objective_trace)))}


def run_release(args) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, HERE)
    from release_torch import ReleasePipeline

    from texter_jax.emphasis import default_spectrum

    dev = "cuda" if args.device == "gpu" and torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(0)
    image = rng.random((224, 224, 3), dtype=np.float32)
    text = rng.normal(size=(130, 512)).astype(np.float32)
    rel = ReleasePipeline(args.canvas, default_spectrum(args.canvas), device=dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def timed(fn):
        sync()
        t = time.perf_counter()
        r = fn()
        sync()
        return time.perf_counter() - t, r

    rel.stage1(image)
    s1, units = timed(lambda: rel.stage1(image))
    rel.maco_start()
    rel.maco_step(units)
    step = _median([timed(lambda: rel.maco_step(units))[0] for _ in range(args.steps)])
    img, trans = rel.maco_image()
    rel.stage3(img, trans, text)
    s3, _ = timed(lambda: rel.stage3(img, trans, text))
    per_image = s1 + args.release_steps * step + s3
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else float("nan")
    return {"device": dev, "torch": torch.__version__, "step": step, "stage1": s1,
            "stage3": s3, "images_per_min": 60 / per_image, "peak_gib": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--steps", type=int, default=8, help="MACO steps timed per run")
    ap.add_argument("--release-steps", type=int, default=512)
    ap.add_argument("--canvas", type=int, default=1280)
    ap.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    ap.add_argument("--skip-release", action="store_true")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child: dtype:batch|release
    args = ap.parse_args()
    if args.one:
        if args.one == "release":
            print(json.dumps(run_release(args)))
        else:
            dtype, b = args.one.split(":")
            print(json.dumps(run_ours(argparse.Namespace(**{**vars(args), "dtype": dtype,
                                                            "batch": int(b)}))))
        return

    env = dict(os.environ)
    if args.device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    # No JAX in this process: it would hold device memory the children need.
    print(f"canvas {args.canvas}, 6 crops at 224, ResNet-50 + SAE; {args.steps} MACO steps "
          f"timed, images/min at {args.release_steps} steps", flush=True)
    base = [sys.executable, os.path.abspath(__file__), "--steps", str(args.steps),
            "--release-steps", str(args.release_steps), "--canvas", str(args.canvas),
            "--device", args.device]
    jobs = ([] if args.skip_release else ["release"]) + [
        f"{d}:{b}" for d in args.dtypes.split(",") for b in args.batches]
    shown = None
    for job in jobs:
        res = subprocess.run(base + ["--one", job], env=env, capture_output=True, text=True)
        if res.returncode:
            print(f"{job}: failed ({res.stderr.strip().splitlines()[-1][:200]})", flush=True)
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        if job == "release":
            print(f"release (torch {r['torch']}, {r['device']}, one image at a time, weight "
                  f"grads on): step {r['step'] * 1e3:.1f} ms, stage 1 {r['stage1']:.2f} s, "
                  f"stage 3 {r['stage3']:.2f} s -> {r['images_per_min']:.2f} images/min, "
                  f"peak {_gib(r['peak_gib'])}", flush=True)
        else:
            if r["device"] != shown:
                print(f"device: {r['device']}", flush=True)
                shown = r["device"]
            print(f"ours {r['dtype']:>8} batch {r['batch']:>3}: step {r['step'] * 1e3:8.1f} ms "
                  f"({r['step'] * 1e3 / r['batch']:6.1f} ms/image), rest {r['fixed']:6.2f} s, "
                  f"first call {r['first_call']:5.1f} s -> {r['images_per_min']:8.2f} "
                  f"images/min, peak {_gib(r['peak_gib'])}, objective {r['objective']:.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
