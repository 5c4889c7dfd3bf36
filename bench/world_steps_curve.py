"""Hit rate of TEXTER in the world against the number of MACO steps (issue 9).

Reuses a demo's cache (world CLIP, classifiers, aligners, SAEs, magnitude template; run
``texter demo`` first with the same settings) and explains the demo's held-out images
again at each step count, through the demo's own code; explanations are cached beside
the demo's, so the demo's own step count costs nothing. Prints one markdown row per
(classifier, method, steps)::

    .venv/bin/python bench/world_steps_curve.py --out texter_demo --steps 16 32 64 128
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time

import jax
import numpy as np

from texter_jax.eval.metrics.hits import hit_table
from texter_jax.eval.records import stable_hash
from texter_jax.session import Session
from texter_jax.world.captions import concept_bank
from texter_jax.world.demo import WorldDemo, explained_images
from texter_jax.world.demo_config import DemoConfig
from texter_jax.world.explain import explain_world
from texter_jax.world.interventions import truth_values
from texter_jax.world.reader_controls import class_consistency
from texter_jax.world.stack import world_magnitude, world_stack


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=DemoConfig.out, help="the demo's output folder")
    p.add_argument("--steps", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--methods", nargs="+", default=["texter", "texter-nosae"])
    p.add_argument("--seed", type=int, default=DemoConfig.seed)
    p.add_argument("--classifiers", nargs="*", default=None, help="default: all")
    p.add_argument("--presets", nargs="+", default=["release"],
                   help="ExplainConfig presets compared at each step count (release, fast)")
    a = p.parse_args(argv)
    base = DemoConfig(out=a.out, seed=a.seed)
    demo = WorldDemo(base, log=lambda s: None)
    clip, clip_vars, _, classifiers = demo._world_models()
    clip_vars = jax.tree.map(jax.numpy.asarray, clip_vars)
    phrases, meaning = concept_bank()
    text_emb = np.asarray(clip.encode_text(clip_vars, clip.tokenize(phrases)))
    magnitude, spectrum_id = world_magnitude(base, demo.cache)
    attrs, images = explained_images(base)
    print("| classifier | method | preset | MACO steps (max) | steps run, mean | hit@1 [95% CI] | "
          "hit@3 [95% CI] | class consistency | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (clf, variables, info) in classifiers.items():
        if a.classifiers and name not in a.classifiers:
            continue
        variables = jax.tree.map(jax.numpy.asarray, variables)
        identity = stable_hash({"name": name, "train": info.get("train_config"),
                                "task": info.get("task")})
        aligner, sae, _, stack_key = world_stack(base, demo.cache, name, clf, variables, clip,
                                                 clip_vars, identity, log=lambda s: None)
        session = Session(clf, variables, clip, clip_vars, aligner, sae)
        truths = truth_values(info["critical"], attrs)
        for steps, preset in itertools.product(a.steps, a.presets):
            cfg = dataclasses.replace(base, maco_steps=steps, preset=preset)
            t = time.perf_counter()
            expl = explain_world(cfg, demo.cache, name, session, text_emb, images, stack_key,
                                 magnitude, spectrum_id, methods=a.methods)
            secs = time.perf_counter() - t
            for method, rec in expl.items():
                run = rec.get("steps_run")
                run = f"{np.mean(run):.0f}" if run is not None else "n/a"
                order = np.argsort(-rec["scores"], axis=1, kind="stable")
                h = hit_table([[phrases[j] for j in r] for r in order], truths, meaning,
                              seed=base.seed)
                cc = class_consistency(rec["crop_labels"], rec["label"], seed=base.seed)
                ci = " | ".join(f"{h[k]['rate']:.2f} [{h[k]['low']:.2f}, {h[k]['high']:.2f}]"
                                for k in ("hit@1", "hit@3"))
                print(f"| {name} | {method} | {preset} | {steps} | {run} | {ci} | "
                      f"{cc['rate']:.2f} | {secs:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
