"""What control (a)'s crops show by the world's own rules, for the demo's held-out images.

Control (a) reads each explained image tiled at crop scale over the canvas
(:func:`texter_jax.world.controls.tiled_inputs`). This counts, for the very crops the
reader reads (the demo's seeds and keys), which attributes each crop shows by the rules
the world's captions follow (:func:`texter_jax.world.reader_controls.tiled_crops_visible`):
the share of crops, and the share of images with at least one such crop. Geometry only: no
model is trained or read, so it takes seconds. Usage::

    .venv/bin/python bench/tiled_crop_visibility.py --seeds 0 1 --images 128
"""

from __future__ import annotations

import argparse
import dataclasses

from texter_jax.world.attributes import DISCRETE
from texter_jax.world.demo import explained_images
from texter_jax.world.demo_config import DemoConfig
from texter_jax.world.reader_controls import tiled_crops_visible


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[DemoConfig.seed])
    p.add_argument("--images", type=int, default=DemoConfig.explain_images)
    args = p.parse_args()
    print("| seed | images | share of crops: " + " | ".join(DISCRETE)
          + " | images with one such crop: " + " | ".join(DISCRETE) + " |")
    print("|---" * (2 + 2 * len(DISCRETE)) + "|")
    for seed in args.seeds:
        c = dataclasses.replace(DemoConfig(), seed=seed, explain_images=args.images)
        attrs, _ = explained_images(c)
        shows = tiled_crops_visible(attrs, canvas=c.canvas, n_crops=c.map_crops, seed=seed)
        crops = " | ".join(f"{v:.2f}" for v in shows.mean(axis=(0, 1)))
        anyc = " | ".join(f"{v:.2f}" for v in shows.any(axis=1).mean(axis=0))
        print(f"| {seed} | {args.images} | {crops} | {anyc} |")


if __name__ == "__main__":
    main()
