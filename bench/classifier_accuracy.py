"""World classifiers' held-out accuracy with and without mosaic views, over seeds.

Each run trains the chosen world classifiers exactly as ``texter demo`` does
(:func:`texter_jax.world.classifiers.train_all`, the demo's :class:`ClassifierTrainConfig`)
once with ``extra_mosaics`` 0 (no mosaic views) and once with the default share, for every
seed given, and records accuracy on ordinary held-out scenes (independent attributes) and
on held-out mosaics. The two settings of one seed train on the same ordinary images, so
their difference is paired. ``--repeats`` reruns a setting: pinned to one core the reruns
were bit-identical (badge, seed 0, 2026-12-07), while runs on two cores can differ (the
demo's seed-0 badge classifier: 0.836 and 0.746 in two runs), so the spread over seeds is
the one to read. Usage::

    .venv/bin/python bench/classifier_accuracy.py --classifiers badge --seeds 0 1 2 \\
        --out OUT.json

Not a test: it takes minutes per classifier and run; paste the table with the machine named.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from texter_jax.world.classifier_data import TASKS, ClassifierTrainConfig
from texter_jax.world.classifiers import train_all
from texter_jax.world.demo_config import DemoConfig


def run(args) -> dict:
    c = DemoConfig()
    base = ClassifierTrainConfig(image_size=c.image_size, train_images=c.train_images)
    tasks = {n: TASKS[n] for n in args.classifiers}
    rows = []
    for seed in args.seeds:
        for share in (0.0, base.extra_mosaics):
            for rep in range(args.repeats):
                cfg = dataclasses.replace(base, seed=seed, extra_mosaics=share)
                t0 = time.perf_counter()
                out = train_all(cfg, tasks, log=None)
                for name, (_, _, info) in out.items():
                    rows.append({"classifier": name, "seed": seed, "extra_mosaics": share,
                                 "repeat": rep, "test_accuracy": info["test_accuracy"],
                                 "mosaic_test_accuracy": info["mosaic_test_accuracy"],
                                 "critical": info["critical"],
                                 "seconds": time.perf_counter() - t0})
                    print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "config": base.to_json()}


def table(rows: list[dict]) -> str:
    lines = ["| classifier | seed | no mosaics | with mosaics | difference | "
             "mosaic accuracy (no / with) |", "|---|---|---|---|---|---|"]
    keys = sorted({(r["classifier"], r["seed"]) for r in rows})
    for name, seed in keys:
        def acc(share, field="test_accuracy", name=name, seed=seed):
            return [r[field] for r in rows if r["classifier"] == name and r["seed"] == seed
                    and (r["extra_mosaics"] > 0) == share]
        no, yes = acc(False), acc(True)
        lines.append(f"| {name} | {seed} | {', '.join(f'{x:.3f}' for x in no)} | "
                     f"{', '.join(f'{x:.3f}' for x in yes)} | "
                     f"{np.mean(yes) - np.mean(no):+.3f} | "
                     f"{np.mean(acc(False, 'mosaic_test_accuracy')):.2f} / "
                     f"{np.mean(acc(True, 'mosaic_test_accuracy')):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classifiers", nargs="+", default=["badge"], choices=sorted(TASKS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--repeats", type=int, default=1, help="runs per seed and setting")
    p.add_argument("--out", type=Path, help="also write the rows and the table here (JSON)")
    args = p.parse_args(argv)
    res = run(args)
    print(table(res["rows"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res | {"table": table(res["rows"])}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
