"""The world's trained models in one call: its CLIP and its classifiers, cached.

Run (first time ~3 minutes on 2 CPU cores, then seconds)::

    python -m texter_jax.world.models --cache runs/world_cache

prints a markdown summary: CLIP zero-shot accuracy per attribute, classifier accuracies,
each classifier's intervention table (its measured decision-critical attribute) and the
wall time of every step.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from texter_jax.world.classifiers import ClassifierTrainConfig, Task, get_or_train_classifiers
from texter_jax.world.clip_train import ClipTrainConfig, get_or_train_world_clip


@dataclasses.dataclass
class WorldModels:
    """Everything the world's TEXTER stack starts from.

    Attributes:
      clip: ``(WorldClip, variables, metrics)``.
      classifiers: ``{name: (Classifier, variables, metrics)}``; ``metrics["critical"]``
        is the measured decision-critical attribute.
      seconds: wall time of each part of this call (``clip``, ``classifiers``).
    """

    clip: tuple[Any, Any, dict]
    classifiers: dict[str, tuple[Any, Any, dict]]
    seconds: dict[str, float]


def prepare_world(cache_dir: str | Path, *, clip_cfg: ClipTrainConfig | None = None,
                  clf_cfg: ClassifierTrainConfig | None = None,
                  tasks: dict[str, Task] | None = None,
                  log: Callable[[str], None] | None = print,
                  clip_progress=None, clf_progress=None) -> WorldModels:
    """Loads or trains (and caches under ``cache_dir``) the world CLIP and classifiers."""
    t0 = time.time()
    clip = get_or_train_world_clip(cache_dir, clip_cfg, log=log, progress=clip_progress)
    t1 = time.time()
    clfs = get_or_train_classifiers(cache_dir, clf_cfg, tasks, log=log, progress=clf_progress)
    t2 = time.time()
    return WorldModels(clip=clip, classifiers=clfs,
                       seconds={"clip": round(t1 - t0, 1), "classifiers": round(t2 - t1, 1)})


def summary_markdown(world: WorldModels) -> str:
    """A markdown summary of the world's models and their measured truths."""
    zs = world.clip[2]["zero_shot"]
    lines = ["## World CLIP", "",
             f"Zero-shot accuracy on {world.clip[2]['eval_images']} held-out images "
             f"(training: {world.clip[2]['train_seconds']} s):", "",
             "| " + " | ".join(zs) + " |", "|" + "---|" * len(zs),
             "| " + " | ".join(f"{v:.3f}" for v in zs.values()) + " |", "",
             "## Classifiers", "",
             "| classifier | label | test accuracy | critical attribute (measured) | "
             "training s |", "|---|---|---|---|---|"]
    for name, (_, _, m) in world.classifiers.items():
        lines.append(f"| {name} | {m['task']['label']} | {m['test_accuracy']:.3f} | "
                     f"{m['critical']} | {m['train_seconds']} |")
    for name, (_, _, m) in world.classifiers.items():
        lines += ["", f"### Interventions: {name}", "",
                  "| attribute | mean drop of p(pred) | s.e. | flip rate | n |",
                  "|---|---|---|---|---|"]
        for r in m["interventions"]["rows"]:
            lines.append(f"| {r['attribute']} | {r['mean_drop']:.3f} | {r['sem']:.3f} | "
                         f"{r['flip_rate']:.2f} | {r['n']} |")
    lines += ["", f"Wall time of this call: {world.seconds}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default="runs/world_cache")
    a = p.parse_args(argv)
    print(summary_markdown(prepare_world(a.cache)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
