"""How far the planner's memory for this CPU is from the memory an explain run really
takes: ``texter plan``'s per-device peak (the largest compiled program's arguments,
outputs and temps) against the resident memory a warm ``explain_batch`` adds, measured
in a fresh process for each batch size.

    taskset -c 0 python bench/plan_calibration.py --classifier resnet50 --batches 1 2 4

The run is warm (compiled once first) so the compiler's own memory is not counted; the
measured figure is the peak resident set during the second call minus the resident set
just before it, sampled every 5 ms from /proc/self/statm. MACO runs ``--steps`` steps
(its memory does not depend on the step count: the loop is rolled).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GIB = 2 ** 30


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args) -> dict:
    sys.path.insert(0, os.path.dirname(HERE))
    import jax
    import jax.numpy as jnp
    import numpy as np

    from texter_jax.cli.plan_runner import build_spec
    from texter_jax.explain import Aligner, Sae, explain_batch, image_keys
    from texter_jax.models.resnet import random_variables
    from texter_jax.plan import local_target, memory_facts
    from texter_jax.sae import init_sae

    spec = build_spec(args, "float32")
    clf, cfg = spec.classifier, spec.config
    variables = jax.tree.map(jnp.asarray, random_variables(clf, 0))
    spec = type(spec)(clf, variables, cfg, spec.sae, spec.clip_dim, spec.n_texts)
    b = args.batch
    planned = memory_facts(spec, local_target(), b)
    rng = np.random.default_rng(0)
    sae = Sae(init_sae(jax.random.key(0), spec.sae), spec.sae.top_k)
    d, e = clf.feature_dim, spec.clip_dim
    aligner = Aligner(jnp.asarray(rng.normal(size=(e, d)) / np.sqrt(d), jnp.float32),
                      jnp.zeros(e, jnp.float32))
    text = jnp.asarray(rng.normal(size=(spec.n_texts, e)), jnp.float32)
    images = rng.random((b, clf.image_size, clf.image_size, 3), dtype=np.float32)

    def call():
        return explain_batch(clf, variables, aligner, text, images, image_keys(0, range(b)),
                             cfg, sae=sae)

    call()  # compile
    before, peak, stop = _rss(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.005)

    t = threading.Thread(target=sample)
    t.start()
    t0 = time.perf_counter()
    call()
    wall = time.perf_counter() - t0
    stop.set()
    t.join()
    big = max(planned.values(), key=lambda f: f.peak)
    weights = sum(x.nbytes for x in jax.tree.leaves((variables, sae.params, aligner, text)))
    return {"batch": b, "planned_peak": big.peak, "planned_program": big.program,
            "weights": weights,
            "planned": {k: v.peak for k, v in planned.items()},
            "measured_added": peak[0] - before, "rss_before": before, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classifier", default="resnet50")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--canvas", type=int, default=1280)
    ap.add_argument("--crops", type=int, default=6)
    ap.add_argument("--map-crops", type=int, default=6)
    ap.add_argument("--ig-steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.no_sae, args.sae_expansion, args.clip_dim, args.texts = False, 8, 512, 130
    if args.batch is not None:
        print(json.dumps(child(args)))
        return
    print(f"{args.classifier} + SAE, canvas {args.canvas}, {args.crops} crops, CPU, 1 device")
    print(f"{'batch':>5} {'planned GiB':>11} {'(program)':>9} {'- weights':>9} "
          f"{'measured GiB':>12} {'measured/planned':>16} {'RSS before':>10}")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    for b in args.batches:
        cmd = [sys.executable, os.path.abspath(__file__), "--classifier", args.classifier,
               "--steps", str(args.steps), "--canvas", str(args.canvas), "--crops",
               str(args.crops), "--map-crops", str(args.map_crops), "--ig-steps",
               str(args.ig_steps), "--batch", str(b)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode:
            print(f"{b:>5} failed: {res.stderr.strip().splitlines()[-1][:200]}")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        new = r["planned_peak"] - r["weights"]
        print(f"{b:>5} {r['planned_peak'] / GIB:>11.2f} {r['planned_program']:>9} "
              f"{new / GIB:>9.2f} {r['measured_added'] / GIB:>12.2f} "
              f"{r['measured_added'] / new:>16.2f} "
              f"{r['rss_before'] / GIB:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
