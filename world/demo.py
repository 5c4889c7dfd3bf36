"""``texter demo``: the whole TEXTER stack in the procedural world, scored against truth.

1. the world's CLIP and four classifiers with different decision rules are trained
   (or loaded from the cache; see ``world/clip_train.py``, ``world/classifiers.py``),
   all on whole images and close-up / partial / wide views; each classifier's
   decision-critical attribute is *measured* by intervention;
2. MACO's magnitude template is measured on world renders (``texter spectrum``'s code);
3. per classifier: features and CLIP image embeddings of fresh whole and zoomed views,
   a closed-form aligner, a TopK SAE (release recipe, smaller batch);
4. reader controls (:mod:`texter_jax.world.reader_controls`): can stage 3's reader name the truth on
   canvases that plainly show it?
5. TEXTER with SAE, TEXTER without SAE, the Text-to-Concept baseline and an ablation
   whose stage 2 maximises the class logit explain a held-out sample through exactly
   the library code real models use (:func:`texter_jax.explain.explain_batch`,
   :func:`~texter_jax.explain.text_to_concept_batch`);
6. hit@1 / hit@3 (does a top-k concept name the value of the measured critical
   attribute), bootstrap 95 % CIs, class consistency of concept images; ``report.md``,
   ``results.json`` and ``examples.png`` (:mod:`texter_jax.world.report`).

Every trained artefact and every explanation is cached under ``<out>/cache`` keyed by its
configuration, so a second run takes seconds. Settings: :mod:`texter_jax.world.demo_config`; the
per-classifier aligner, SAE and template: :mod:`texter_jax.world.stack`; explanations through
a :class:`texter_jax.session.Session`: :mod:`texter_jax.world.explain`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from texter_jax.eval.metrics.hits import hit_table
from texter_jax.eval.records import stable_hash
from texter_jax.session import Session
from texter_jax.world.attributes import WorldAttrs, sample_attributes
from texter_jax.world.captions import concept_bank
from texter_jax.world.classifiers import ClassifierTrainConfig, get_or_train_classifiers
from texter_jax.world.clip_train import ClipTrainConfig, get_or_train_world_clip
from texter_jax.world.demo_config import DemoConfig
from texter_jax.world.explain import explain_world
from texter_jax.world.generator import render
from texter_jax.world.interventions import truth_values
from texter_jax.world.page import write_world_page
from texter_jax.world.reader_controls import class_consistency, reader_controls
from texter_jax.world.report import write_report
from texter_jax.world.stack import world_magnitude, world_stack

# The held-out images' seed is the run seed plus this: held out from every training set.
EXPLAIN_SEED_OFFSET = 9_000_011


def explained_images(cfg: DemoConfig) -> tuple[WorldAttrs, np.ndarray]:
    """The demo's held-out images to explain: their records and float32 images
    [N, S, S, 3] in [0, 1], N = ``cfg.explain_images``."""
    seed = cfg.seed + EXPLAIN_SEED_OFFSET
    attrs = sample_attributes(seed, cfg.explain_images)
    return attrs, render(attrs, seed, image_size=cfg.image_size) / np.float32(255)


class WorldDemo:
    """One run of the demo; ``run()`` returns the path of ``report.md``."""

    def __init__(self, config: DemoConfig, *, log: Callable[[str], None] = print):
        self.cfg = config
        self.out = Path(config.out)
        self.cache = self.out / "cache"
        self.log = log
        self.timings: dict[str, float] = {}

    def _bar(self, desc: str, total: int):
        return tqdm(total=total, desc=desc, unit="step", leave=False,
                    disable=not self.cfg.progress)

    def _step_progress(self, desc: str):
        """A ``progress(step, steps, loss)`` callback that opens a bar at step 0."""
        state = {}

        def progress(step, steps, loss):
            if step == 0:
                if "bar" in state:
                    state["bar"].close()
                state["bar"] = self._bar(desc, steps)
            state["bar"].update(1)
            if step == steps - 1:
                state.pop("bar").close()
        return progress

    # -- world models ---------------------------------------------------------------

    def _world_models(self):
        c = self.cfg
        t = time.perf_counter()
        clip_cfg = ClipTrainConfig(image_size=c.image_size, steps=c.clip_steps, seed=c.seed)
        if c.clip_steps < 100:  # tiny runs: keep the curriculum inside the run
            clip_cfg = dataclasses.replace(clip_cfg, warmup=5, focus_steps=c.clip_steps // 3,
                                           eval_images=120)
        clip, clip_vars, clip_metrics = get_or_train_world_clip(
            self.cache, clip_cfg, log=self.log, progress=self._step_progress("world CLIP"))
        self.timings["world CLIP"] = time.perf_counter() - t
        t = time.perf_counter()
        cls_cfg = ClassifierTrainConfig(image_size=c.image_size, train_images=c.train_images,
                                        seed=c.seed)
        if c.train_images < 1000:
            cls_cfg = dataclasses.replace(cls_cfg, test_images=100, intervention_images=60)
        classifiers = get_or_train_classifiers(self.cache, cls_cfg, log=self.log,
                                               progress=self._step_progress("classifier"))
        self.timings["classifiers + interventions"] = time.perf_counter() - t
        return clip, clip_vars, clip_metrics, classifiers

    def run(self) -> Path:
        t_start = time.perf_counter()
        c = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        clip, clip_vars, clip_metrics, classifiers = self._world_models()
        clip_vars = jax.tree.map(jax.numpy.asarray, clip_vars)
        phrases, meaning = concept_bank()
        text_emb = np.asarray(clip.encode_text(clip_vars, clip.tokenize(phrases)))
        magnitude, spectrum_id = world_magnitude(c, self.cache)
        ex_attrs, ex_images = explained_images(c)
        results: dict[str, Any] = {}
        for name, (clf, variables, info) in classifiers.items():
            variables = jax.tree.map(jax.numpy.asarray, variables)
            t = time.perf_counter()
            clf_identity = stable_hash({"name": name, "train": info.get("train_config"),
                                        "task": info.get("task")})
            aligner, sae, stack_metrics, stack_key = world_stack(
                c, self.cache, name, clf, variables, clip, clip_vars, clf_identity, self.log)
            session = Session(clf, variables, clip, clip_vars, aligner, sae,
                              names={"classifier": f"world classifier {name}"})
            self.timings[f"aligner + SAE {name}"] = time.perf_counter() - t
            critical = info["critical"]
            truths = truth_values(critical, ex_attrs)
            t = time.perf_counter()
            controls = reader_controls(clf, variables, aligner, text_emb, phrases, meaning,
                                       ex_images, truths, critical, canvas=c.canvas,
                                       n_crops=c.map_crops, per_value=c.control_canvases,
                                       seed=c.seed, clip=clip, clip_vars=clip_vars,
                                       attrs=ex_attrs)
            self.timings[f"reader controls {name}"] = time.perf_counter() - t
            expl = explain_world(c, self.cache, name, session, text_emb, ex_images, stack_key,
                                 magnitude, spectrum_id, methods=c.methods(), bar=self._bar,
                                 timings=self.timings)
            rows = {}
            for method, rec in expl.items():
                order = np.argsort(-rec["scores"], axis=1, kind="stable")
                rankings = [[phrases[j] for j in row] for row in order]
                rows[method] = {"hits": hit_table(rankings, truths, meaning, ks=(1, 3),
                                                  seed=c.seed),
                                "top3": [r[:3] for r in rankings]}
                if "crop_labels" in rec:
                    rows[method]["class_consistency"] = class_consistency(
                        rec["crop_labels"], rec["label"], seed=c.seed)
            results[name] = {"info": info, "stack": stack_metrics, "methods": rows,
                             "explanations": expl, "truths": truths, "controls": controls}
        self.timings["total"] = time.perf_counter() - t_start
        report = write_report(self.out, c, results, clip_metrics, self.timings, ex_images)
        write_world_page(self.out, c, results, ex_images)
        return report
