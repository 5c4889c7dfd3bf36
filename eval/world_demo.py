"""``texter demo``: the whole TEXTER stack in the procedural world, scored against truth.

1. the world's CLIP and four classifiers with different decision rules are trained
   (or loaded from the cache; see ``train/world_clip.py``, ``train/world_classifiers.py``),
   all on whole images and close-up / partial / wide views; each classifier's
   decision-critical attribute is *measured* by intervention;
2. MACO's magnitude template is measured on world renders (``texter spectrum``'s code);
3. per classifier: features and CLIP image embeddings of fresh whole and zoomed views,
   a closed-form aligner, a TopK SAE (release recipe, smaller batch);
4. reader controls (:mod:`eval.world_controls`): can stage 3's reader name the truth on
   canvases that plainly show it?
5. TEXTER with SAE, TEXTER without SAE, the Text-to-Concept baseline and an ablation
   whose stage 2 maximises the class logit explain a held-out sample through exactly
   the library code real models use (:func:`texter_jax.explain.explain_batch`,
   :func:`~texter_jax.explain.text_to_concept_batch`);
6. hit@1 / hit@3 (does a top-k concept name the value of the measured critical
   attribute), bootstrap 95 % CIs, class consistency of concept images; ``report.md``,
   ``results.json`` and ``examples.png`` (:mod:`eval.world_report`).

Every trained artefact and every explanation is cached under ``<out>/cache`` keyed by its
configuration, so a second run takes seconds.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from eval.records import stable_hash

# Method name -> (ExplainConfig overrides, uses the SAE). text2concept has no stage 2.
METHODS = ("texter", "texter-nosae", "text2concept", "texter-logit")
MACO_METHODS = {"texter": {"use_sae": True}, "texter-nosae": {"use_sae": False},
                "texter-logit": {"use_sae": False, "objective": "class_logit"}}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Settings of one demo run (defaults: first run under 10 minutes on 2 CPU cores).

    Attributes:
      out: output folder (report.md, figures, cache/).
      image_size: side of the world's images (and of the classifiers' input).
      clip_steps: world-CLIP optimiser steps.
      train_images: classifier training images.
      feature_images: fresh images per classifier for the aligner and the SAE (each also
        seen once through a zoomed view for the aligner).
      explain_images: held-out images explained per classifier and method.
      ig_steps, k_neu: stage 1.
      canvas, maco_steps, maco_crops, map_crops: stages 2 and 3.
      preset: ``ExplainConfig.preset`` name for TEXTER's runs (``"fast"``: MACO's
        convergence stop; maco_steps must then be a multiple of its window, 32).
      spectrum: MACO's magnitude template: ``"world"`` (measured on renders) or
        ``"power_law"`` (the library default).
      control_canvases: value canvases per value in the reader controls.
      sae_expansion, sae_epochs, sae_batch: SAE shape and training.
      batch_size: images per explain_batch call.
      seed: root seed.
      figure_examples: examples per classifier in the figure grid.
      progress: show progress bars on stderr.
    """

    out: str = "texter_demo"
    image_size: int = 64
    clip_steps: int = 1200
    train_images: int = 8000
    feature_images: int = 3000
    explain_images: int = 32
    ig_steps: int = 100
    k_neu: int = 6
    canvas: int = 256
    maco_steps: int = 32
    maco_crops: int = 6
    map_crops: int = 6
    preset: str = "release"
    spectrum: str = "world"
    control_canvases: int = 8
    sae_expansion: int = 8
    sae_epochs: int = 10
    sae_batch: int = 128
    batch_size: int = 32
    seed: int = 0
    figure_examples: int = 3
    progress: bool = True

    def __post_init__(self):
        if self.spectrum not in ("world", "power_law"):
            raise ValueError(f"spectrum must be 'world' or 'power_law', got {self.spectrum!r}")
        from texter_jax.emphasis import MacoConfig
        from texter_jax.explain import ExplainConfig

        # fails now, not after training, if the preset cannot take these MACO steps
        ExplainConfig.preset(self.preset, maco=MacoConfig(canvas=self.canvas,
                                                          steps=self.maco_steps))

    def tiny(self) -> "DemoConfig":
        """A seconds-scale variant for CI: every stage runs on real data, small sizes."""
        return dataclasses.replace(
            self, image_size=32, clip_steps=30, train_images=256, feature_images=300,
            explain_images=4, ig_steps=16, canvas=64, maco_steps=4, maco_crops=2,
            map_crops=2, control_canvases=2, sae_expansion=2, sae_epochs=2, sae_batch=64,
            batch_size=4)


class _Rows:
    """In-memory rows with the interface ``train.sae_train.train_sae`` reads."""

    def __init__(self, x: np.ndarray):
        self.x = np.asarray(x, np.float32)
        self.dim = self.x.shape[1]

    def __len__(self) -> int:
        return self.x.shape[0]

    def take(self, indices) -> np.ndarray:
        return self.x[np.asarray(indices)]


class WorldDemo:
    """One run of the demo; ``run()`` returns the path of ``report.md``."""

    def __init__(self, config: DemoConfig, *, log: Callable[[str], None] = print):
        self.cfg = config
        self.out = Path(config.out)
        self.cache = self.out / "cache"
        self.log = log
        self.timings: dict[str, float] = {}

    def _bar(self, desc: str, total: int):
        from tqdm.auto import tqdm

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
        from train.world_classifiers import ClassifierTrainConfig, get_or_train_classifiers
        from train.world_clip import ClipTrainConfig, get_or_train_world_clip

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

    def _magnitude(self) -> tuple[np.ndarray, str]:
        """MACO's magnitude template for the demo's canvas, and its cache identity."""
        from texter_jax.emphasis import default_spectrum, load_spectrum, save_spectrum
        from texter_jax.emphasis.spectrum import spectrum_from_images
        from texter_jax.world.attributes import WORLD_VERSION, sample_attributes
        from texter_jax.world.generator import render

        c = self.cfg
        if c.spectrum == "power_law":
            return default_spectrum(c.canvas), "power_law"
        path = self.cache / f"spectrum_world{WORLD_VERSION}_{c.canvas}_{c.seed}.npy"
        if not path.is_file():
            # World renders at the canvas size, measured exactly as `texter spectrum`
            # measures a folder (the DC term replaced by the lowest-frequency ring).
            seed = c.seed + 5_000_011
            attrs = sample_attributes(seed, 64)
            renders = render(attrs, seed, image_size=c.canvas)
            save_spectrum(path, spectrum_from_images(renders, c.canvas))
        return load_spectrum(path), path.stem

    # -- per-classifier stack -------------------------------------------------------

    def _stack(self, name, clf, variables, clip, clip_vars, clf_identity):
        import jax

        from texter_jax import aligner as aligner_io
        from texter_jax import sae as sae_io
        from texter_jax.batching import map_in_batches
        from texter_jax.sae import Sae, SaeConfig
        from texter_jax.world.attributes import sample_attributes
        from texter_jax.world.generator import render
        from texter_jax.world.views import DEFAULT_MIX, sample_views
        from train.aligner import fit_aligner
        from train.sae_train import SaeTrainConfig, evaluate_sae, train_sae

        c = self.cfg
        seed = c.seed + 7_000_003
        key = stable_hash({"n": c.feature_images, "seed": seed, "size": c.image_size,
                           "exp": c.sae_expansion, "ep": c.sae_epochs, "bs": c.sae_batch,
                           "clf": clf_identity, "views": DEFAULT_MIX})
        folder = self.cache / "stack" / name / key
        if (folder / "aligner" / "aligner.json").is_file() and \
                (folder / "sae_run" / "sae" / "sae.json").is_file():
            al = aligner_io.load(folder / "aligner")
            sae_cfg, sae_params = sae_io.load(folder / "sae_run" / "sae")
            metrics = json.loads((folder / "metrics.json").read_text())
            self.log(f"[{name}] aligner and SAE loaded from {folder}")
            return al, Sae(sae_params, sae_cfg.top_k), metrics, key
        # Whole images (SAE and aligner) and the same records through random views
        # (aligner only): the aligner must read close-ups as CLIP reads them.
        attrs = sample_attributes(seed, c.feature_images)
        whole = render(attrs, seed, image_size=c.image_size) / np.float32(255)
        views = sample_views(seed + 1, attrs, tuple((k, w) for k, w in DEFAULT_MIX
                                                     if k != "whole"))
        zoomed = render(attrs, seed + 1, image_size=c.image_size, views=views) / np.float32(255)
        feat = jax.jit(lambda x: clf.features(variables, x))
        emb = jax.jit(lambda x: clip.encode_image(clip_vars, x))
        z = map_in_batches(feat, whole)
        z_all = np.concatenate([z, map_in_batches(feat, zoomed)])
        h_all = np.concatenate([map_in_batches(emb, whole), map_in_batches(emb, zoomed)])
        al = fit_aligner(z_all, h_all, key=jax.random.key(c.seed), method="closed_form")
        aligner_io.save(folder / "aligner", al, overwrite=True)
        d = z.shape[1]
        n_train = int(0.9 * len(z))  # the last 10 % are held out for the SAE's R^2
        sae_cfg = SaeConfig.release_default(d, expansion=c.sae_expansion)
        result = train_sae(_Rows(z[:n_train]), folder / "sae_run", sae_config=sae_cfg,
                           train_config=SaeTrainConfig(epochs=c.sae_epochs,
                                                       batch_size=c.sae_batch, seed=c.seed),
                           progress=False, verbose=False)
        sae_eval = evaluate_sae(result.params, z[n_train:], sae_cfg.top_k)
        metrics = {"aligner": {k: v for k, v in al.metrics.items()
                               if isinstance(v, (int, float))},
                   "sae": {"input_dim": d, "nb_concepts": sae_cfg.nb_concepts,
                           "top_k": sae_cfg.top_k, "heldout_rows": len(z) - n_train,
                           **{k: float(v) for k, v in sae_eval.items()}},
                   "feature_images": c.feature_images, "aligner_rows": len(z_all)}
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
        self.log(f"[{name}] aligner holdout R2 {al.metrics.get('holdout_r2', float('nan')):.3f}"
                 f", SAE {d}->{sae_cfg.nb_concepts} (k={sae_cfg.top_k})")
        return al, Sae(result.params, sae_cfg.top_k), metrics, key

    def _explain(self, name, clf, variables, aligner, sae, text_emb, images, stack_key,
                 magnitude, spectrum_id, methods=METHODS):
        """Per method: concept scores [N, T] and more (cached); concept images for figures."""
        from texter_jax.emphasis import MacoConfig, maco_progress
        from texter_jax.explain import (ExplainConfig, explain_batch, image_keys,
                                        text_to_concept_batch)

        c = self.cfg
        maco = MacoConfig(canvas=c.canvas, steps=c.maco_steps, n_crops=c.maco_crops,
                          crop_size=clf.image_size)
        out: dict[str, dict[str, np.ndarray]] = {}
        for method in methods:
            key = {"m": method, "ig": c.ig_steps, "k": c.k_neu, "canvas": c.canvas,
                   "steps": c.maco_steps, "crops": c.maco_crops, "map": c.map_crops,
                   "n": len(images), "seed": c.seed, "size": c.image_size,
                   "stack": stack_key, "spectrum": spectrum_id}
            if c.preset != "release" and method != "text2concept":
                key["preset"] = c.preset  # release keys as before presets existed
            cfg_key = stable_hash(key)
            path = self.cache / "explanations" / f"{name}_{method}_{cfg_key}.npz"
            if path.is_file():
                out[method] = dict(np.load(path))
                continue
            t = time.perf_counter()
            if method == "text2concept":
                label, prob, scores = text_to_concept_batch(clf, variables, aligner, text_emb,
                                                            images)
                rec = {"label": label, "prob": prob, "scores": scores}
            else:
                cfg = ExplainConfig.preset(c.preset, k_neu=c.k_neu, ig_steps=c.ig_steps,
                                           maco=maco, map_crops=c.map_crops,
                                           **MACO_METHODS[method])
                parts = []
                bar = self._bar(f"{name} {method} (MACO)", c.maco_steps)

                def listener(step, bar=bar):
                    if step == 0 and bar.n >= bar.total:  # a retry pass or the next batch
                        bar.total += c.maco_steps
                    bar.update(1)
                with maco_progress(listener):
                    for s in range(0, len(images), c.batch_size):
                        batch = images[s:s + c.batch_size]
                        parts.append(explain_batch(
                            clf, variables, aligner, text_emb, batch,
                            image_keys(c.seed, range(s, s + len(batch))), cfg,
                            sae=sae if cfg.use_sae else None, magnitude=magnitude))
                bar.close()
                k = c.figure_examples
                rec = {f: np.concatenate([getattr(p, f) for p in parts])
                       for f in ("label", "prob", "retries", "crop_labels", "unit_ids")}
                rec["scores"] = np.concatenate([p.concept_scores for p in parts])
                rec["steps_run"] = np.concatenate(
                    [np.sum(~np.isnan(p.objective_trace), axis=1) for p in parts])
                for f in ("concept_image", "transparency"):
                    rec[f] = np.concatenate([getattr(p, f) for p in parts])[:k]
            self.timings[f"explain {name} {method}"] = time.perf_counter() - t
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".partial.npz")
            np.savez(tmp, **rec)
            tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
            out[method] = rec
        return out

    # -- the run --------------------------------------------------------------------

    def run(self) -> Path:
        import jax

        from eval.world_controls import class_consistency, reader_controls
        from eval.world_report import write_report
        from texter_jax.world.attributes import sample_attributes
        from texter_jax.world.captions import concept_bank
        from texter_jax.world.generator import render
        from texter_jax.world.interventions import truth_values
        from texter_jax.world.scoring import hit_table

        t_start = time.perf_counter()
        c = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        clip, clip_vars, clip_metrics, classifiers = self._world_models()
        clip_vars = jax.tree.map(jax.numpy.asarray, clip_vars)
        phrases, meaning = concept_bank()
        text_emb = np.asarray(clip.encode_text(clip_vars, clip.tokenize(phrases)))
        magnitude, spectrum_id = self._magnitude()
        seed = c.seed + 9_000_011  # held out from every training set
        ex_attrs = sample_attributes(seed, c.explain_images)
        ex_images = render(ex_attrs, seed, image_size=c.image_size) / np.float32(255)
        results: dict[str, Any] = {}
        for name, (clf, variables, info) in classifiers.items():
            variables = jax.tree.map(jax.numpy.asarray, variables)
            t = time.perf_counter()
            clf_identity = stable_hash({"name": name, "train": info.get("train_config"),
                                        "task": info.get("task")})
            aligner, sae, stack_metrics, stack_key = self._stack(
                name, clf, variables, clip, clip_vars, clf_identity)
            self.timings[f"aligner + SAE {name}"] = time.perf_counter() - t
            critical = info["critical"]
            truths = truth_values(critical, ex_attrs)
            t = time.perf_counter()
            controls = reader_controls(clf, variables, aligner, text_emb, phrases, meaning,
                                       ex_images, truths, critical, canvas=c.canvas,
                                       n_crops=c.map_crops, per_value=c.control_canvases,
                                       seed=c.seed)
            self.timings[f"reader controls {name}"] = time.perf_counter() - t
            expl = self._explain(name, clf, variables, aligner, sae, text_emb, ex_images,
                                 stack_key, magnitude, spectrum_id)
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
        return write_report(self.out, c, results, clip_metrics, self.timings, ex_images)
