"""``texter demo``: the whole TEXTER stack in the procedural world, scored against truth.

1. the world's CLIP and three classifiers with different decision rules are trained
   (or loaded from the cache; see ``train/world_clip.py``, ``train/world_classifiers.py``);
   each classifier's decision-critical attribute is *measured* by intervention;
2. per classifier: features and CLIP image embeddings of fresh world images, a
   closed-form aligner, a TopK SAE (release recipe, smaller batch);
3. TEXTER with SAE, TEXTER without SAE and the Text-to-Concept baseline explain a held-out
   sample through exactly the library code real models use
   (:func:`texter_jax.explain.explain_batch`, :func:`~texter_jax.explain.text_to_concept_batch`);
4. hit@1 / hit@3: does a top-k concept name the value of the measured critical attribute
   in that image; bootstrap 95% CIs; ``report.md`` and PNG figures.

Every trained artefact and every explanation is cached under ``<out>/cache`` keyed by its
configuration, so a second run takes seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

METHODS = ("texter", "texter-nosae", "text2concept")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Settings of one demo run (defaults: first run under 10 minutes on 2 CPU cores).

    Attributes:
      out: output folder (report.md, figures, cache/).
      image_size: side of the world's images (and of the classifiers' input).
      clip_steps: world-CLIP optimiser steps.
      train_images: classifier training images.
      feature_images: fresh images per classifier for the aligner and the SAE.
      explain_images: held-out images explained per classifier and method.
      ig_steps, k_neu: stage 1.
      canvas, maco_steps, maco_crops, map_crops: stages 2 and 3.
      sae_expansion, sae_epochs, sae_batch: SAE shape and training.
      batch_size: images per explain_batch call.
      seed: root seed.
      figure_examples: examples per classifier in the figure grid.
    """

    out: str = "texter_demo"
    image_size: int = 64
    clip_steps: int = 700
    train_images: int = 8000
    feature_images: int = 3000
    explain_images: int = 32
    ig_steps: int = 100
    k_neu: int = 6
    canvas: int = 256
    maco_steps: int = 64
    maco_crops: int = 6
    map_crops: int = 6
    sae_expansion: int = 8
    sae_epochs: int = 10
    sae_batch: int = 128
    batch_size: int = 32
    seed: int = 0
    figure_examples: int = 3

    def tiny(self) -> "DemoConfig":
        """A seconds-scale variant for CI: every stage runs on real data, small sizes."""
        return dataclasses.replace(
            self, image_size=32, clip_steps=30, train_images=256, feature_images=300,
            explain_images=4, ig_steps=16, canvas=64, maco_steps=4, maco_crops=2,
            map_crops=2, sae_expansion=2, sae_epochs=2, sae_batch=64, batch_size=4)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class _ArrayShards:
    """In-memory rows with the interface ``train.sae_train.train_sae`` reads."""

    def __init__(self, x: np.ndarray):
        self.x = np.asarray(x, np.float32)
        self.dim = self.x.shape[1]

    def __len__(self) -> int:
        return self.x.shape[0]

    def take(self, indices) -> np.ndarray:
        return self.x[np.asarray(indices)]


def _batched(fn: Callable, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Applies a jitted ``fn`` over fixed-size batches (the last one padded)."""
    out = []
    for s in range(0, len(x), batch):
        chunk = x[s:s + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        out.append(np.asarray(fn(chunk))[:n])
    return np.concatenate(out)


class WorldDemo:
    """One run of the demo; ``run()`` returns the path of ``report.md``."""

    def __init__(self, config: DemoConfig, *, log: Callable[[str], None] = print):
        self.cfg = config
        self.out = Path(config.out)
        self.cache = self.out / "cache"
        self.log = log
        self.timings: dict[str, float] = {}

    # -- world models -------------------------------------------------------------

    def _world_models(self):
        from train.world_classifiers import ClassifierTrainConfig, get_or_train_classifiers
        from train.world_clip import ClipTrainConfig, get_or_train_world_clip

        c = self.cfg
        t = time.perf_counter()
        clip_cfg = ClipTrainConfig(image_size=c.image_size, steps=c.clip_steps, seed=c.seed)
        if c.clip_steps < 100:  # tiny runs: keep the curriculum inside the run
            clip_cfg = dataclasses.replace(clip_cfg, warmup=5, focus_steps=c.clip_steps // 3,
                                           eval_images=120)
        clip, clip_vars, clip_metrics = get_or_train_world_clip(self.cache, clip_cfg,
                                                                log=self.log)
        self.timings["world CLIP"] = time.perf_counter() - t
        t = time.perf_counter()
        cls_cfg = ClassifierTrainConfig(image_size=c.image_size, train_images=c.train_images,
                                        seed=c.seed)
        if c.train_images < 1000:
            cls_cfg = dataclasses.replace(cls_cfg, test_images=100, intervention_images=60)
        classifiers = get_or_train_classifiers(self.cache, cls_cfg, log=self.log)
        self.timings["classifiers + interventions"] = time.perf_counter() - t
        return clip, clip_vars, clip_metrics, classifiers

    # -- per-classifier stack -----------------------------------------------------

    def _aligner_and_sae(self, name, clf, variables, clip, clip_vars, clf_identity):
        import jax

        from texter_jax.explain import Aligner, Sae
        from texter_jax.sae import SaeConfig
        from texter_jax.world.attributes import sample_attributes
        from texter_jax.world.generator import render
        from train.aligner import fit_aligner, load_aligner, save_aligner
        from train.sae_train import SaeTrainConfig, load_sae, train_sae

        c = self.cfg
        folder = self.cache / "stack" / name
        seed = c.seed + 7_000_003
        # The stack depends on the classifier (its training config) and on these settings.
        key = _hash({"n": c.feature_images, "seed": seed, "size": c.image_size,
                     "exp": c.sae_expansion, "ep": c.sae_epochs, "bs": c.sae_batch,
                     "clf": clf_identity})
        folder = folder / key
        if (folder / "aligner" / "aligner.json").is_file() and \
                (folder / "sae_run" / "sae" / "sae.json").is_file():
            al = load_aligner(folder / "aligner")
            sae_cfg, sae_params = load_sae(folder / "sae_run" / "sae")
            metrics = json.loads((folder / "metrics.json").read_text())
            self.log(f"[{name}] aligner and SAE loaded from {folder}")
            return Aligner(al.W, al.b), Sae(sae_params, sae_cfg.top_k), metrics, key
        attrs = sample_attributes(seed, c.feature_images)
        images = render(attrs, seed, image_size=c.image_size).astype(np.float32) / 255.0
        feat = jax.jit(lambda x: clf.features(variables, x))
        emb = jax.jit(lambda x: clip.encode_image(clip_vars, x))
        z, h = _batched(feat, images), _batched(emb, images)
        al = fit_aligner(z, h, key=jax.random.key(c.seed), method="closed_form")
        save_aligner(folder / "aligner", al, overwrite=True)
        d = z.shape[1]
        n_train = int(0.9 * len(z))  # the last 10% are held out for the SAE's R^2
        sae_cfg = SaeConfig.release_default(d, expansion=c.sae_expansion)
        result = train_sae(_ArrayShards(z[:n_train]), folder / "sae_run", sae_config=sae_cfg,
                           train_config=SaeTrainConfig(epochs=c.sae_epochs,
                                                       batch_size=c.sae_batch, seed=c.seed),
                           progress=False, verbose=False)
        from train.sae_train import evaluate_sae

        sae_eval = evaluate_sae(result.params, z[n_train:], sae_cfg.top_k)
        metrics = {"aligner": {k: v for k, v in al.metrics.items()
                               if isinstance(v, (int, float))},
                   "sae": {"input_dim": d, "nb_concepts": sae_cfg.nb_concepts,
                           "top_k": sae_cfg.top_k, "heldout_rows": len(z) - n_train,
                           **{k: float(v) for k, v in sae_eval.items()}},
                   "feature_images": c.feature_images}
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
        self.log(f"[{name}] aligner holdout R2 {al.metrics.get('holdout_r2', float('nan')):.3f}"
                 f", SAE {d}->{sae_cfg.nb_concepts} (k={sae_cfg.top_k})")
        return Aligner(al.W, al.b), Sae(result.params, sae_cfg.top_k), metrics, key

    def _explain(self, name, clf, variables, aligner, sae, text_emb, images, stack_key):
        """Concept scores [N, T] per method (cached) and concept images for figures."""
        from texter_jax.emphasis import MacoConfig
        from texter_jax.explain import (ExplainConfig, explain_batch, image_keys,
                                        text_to_concept_batch)

        c = self.cfg
        maco = MacoConfig(canvas=c.canvas, steps=c.maco_steps, n_crops=c.maco_crops,
                          crop_size=clf.image_size)
        out: dict[str, dict[str, np.ndarray]] = {}
        for method in METHODS:
            cfg_key = _hash({"m": method, "ig": c.ig_steps, "k": c.k_neu, "canvas": c.canvas,
                             "steps": c.maco_steps, "crops": c.maco_crops,
                             "map": c.map_crops, "n": len(images), "seed": c.seed,
                             "size": c.image_size, "stack": stack_key})
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
                cfg = ExplainConfig(k_neu=c.k_neu, ig_steps=c.ig_steps,
                                    use_sae=method == "texter", maco=maco,
                                    map_crops=c.map_crops)
                parts = []
                for s in range(0, len(images), c.batch_size):
                    batch = images[s:s + c.batch_size]
                    parts.append(explain_batch(
                        clf, variables, aligner, text_emb, batch,
                        image_keys(c.seed, range(s, s + len(batch))), cfg,
                        sae=sae if method == "texter" else None))
                k = c.figure_examples
                rec = {"label": np.concatenate([p.label for p in parts]),
                       "prob": np.concatenate([p.prob for p in parts]),
                       "scores": np.concatenate([p.concept_scores for p in parts]),
                       "retries": np.concatenate([p.retries for p in parts]),
                       "concept_image": np.concatenate([p.concept_image for p in parts])[:k],
                       "transparency": np.concatenate([p.transparency for p in parts])[:k]}
            self.timings[f"explain {name} {method}"] = time.perf_counter() - t
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".partial.npz")
            np.savez(tmp, **rec)
            tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
            out[method] = rec
        return out

    # -- the run ------------------------------------------------------------------

    def run(self) -> Path:
        import jax

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
        seed = c.seed + 9_000_011  # held out from every training set
        ex_attrs = sample_attributes(seed, c.explain_images)
        ex_images = render(ex_attrs, seed, image_size=c.image_size).astype(np.float32) / 255.0
        results: dict[str, Any] = {}
        for name, (clf, variables, info) in classifiers.items():
            variables = jax.tree.map(jax.numpy.asarray, variables)
            t = time.perf_counter()
            clf_identity = _hash({"name": name, "train": info.get("train_config"),
                                  "task": info.get("task")})
            aligner, sae, stack_metrics, stack_key = self._aligner_and_sae(
                name, clf, variables, clip, clip_vars, clf_identity)
            self.timings[f"aligner + SAE {name}"] = time.perf_counter() - t
            expl = self._explain(name, clf, variables, aligner, sae, text_emb, ex_images,
                                 stack_key)
            critical = info["critical"]
            truths = truth_values(critical, ex_attrs)
            rows = {}
            for method, rec in expl.items():
                order = np.argsort(-rec["scores"], axis=1, kind="stable")
                rankings = [[phrases[j] for j in row] for row in order]
                rows[method] = {"hits": hit_table(rankings, truths, meaning, ks=(1, 3),
                                                  seed=c.seed),
                                "top3": [r[:3] for r in rankings]}
            results[name] = {"info": info, "stack": stack_metrics, "methods": rows,
                             "explanations": expl, "truths": truths}
        self.timings["total"] = time.perf_counter() - t_start
        report = self._write_report(results, clip_metrics, ex_attrs, ex_images)
        return report

    # -- outputs ------------------------------------------------------------------

    def _write_report(self, results, clip_metrics, ex_attrs, ex_images) -> Path:
        from texter_jax.io.atomic import write_json_atomic, write_text_atomic

        c = self.cfg
        lines = ["# texter demo: TEXTER in a procedural world with known decision rules", ""]
        lines += [
            "Every classifier below was trained here; its decision-critical attribute was "
            "**measured** by intervention (resample one attribute of held-out images, "
            "everything else fixed, and record the drop of the predicted-class "
            "probability). An explanation *hits at k* if one of its top-k concepts names "
            "that attribute's value in the image (e.g. \"grass background\"). 95% CIs are "
            "percentile bootstrap over images.", ""]
        lines += ["## Hit rates", "",
                  "| classifier | measured critical attribute | method | n | hit@1 [95% CI] |"
                  " hit@3 [95% CI] |", "|---|---|---|---|---|---|"]
        for name, r in results.items():
            crit = r["info"]["critical"]
            drop = next((row["mean_drop"] for row in r["info"]["interventions"]["rows"]
                         if row["attribute"] == crit), float("nan"))
            for method, m in r["methods"].items():
                h1, h3 = m["hits"]["hit@1"], m["hits"]["hit@3"]
                lines.append(
                    f"| {name} | {crit} (drop {drop:.2f}) | {method} | {h1['n']} | "
                    f"{h1['rate']:.2f} [{h1['low']:.2f}, {h1['high']:.2f}] | "
                    f"{h3['rate']:.2f} [{h3['low']:.2f}, {h3['high']:.2f}] |")
        lines += ["", "## The world's CLIP: zero-shot accuracy per attribute (held out)", "",
                  "| attribute | accuracy |", "|---|---|"]
        for a, v in clip_metrics.get("zero_shot", {}).items():
            lines.append(f"| {a} | {v:.3f} |")
        lines += ["", "## Classifiers, aligners and SAEs", "",
                  "| classifier | test accuracy | aligner R^2 (held out) | "
                  "SAE R^2 (held out) | SAE shape |", "|---|---|---|---|---|"]
        for name, r in results.items():
            al, sae = r["stack"]["aligner"], r["stack"]["sae"]
            sae_r2 = sae.get("r2", float("nan"))
            lines.append(f"| {name} | {r['info'].get('test_accuracy', float('nan')):.3f} | "
                         f"{al.get('holdout_r2', float('nan')):.3f} | {sae_r2:.3f} | "
                         f"{sae['input_dim']} -> {sae['nb_concepts']} (k={sae['top_k']}) |")
        for name, r in results.items():
            lines += ["", f"### Interventions: {name}", "",
                      "| attribute | mean drop of p(pred) | s.e. | flip rate | n |",
                      "|---|---|---|---|---|"]
            for row in r["info"]["interventions"]["rows"]:
                lines.append(f"| {row['attribute']} | {row['mean_drop']:.3f} | "
                             f"{row['sem']:.3f} | {row['flip_rate']:.2f} | {row['n']} |")
        fig = self._figure(results, ex_attrs, ex_images)
        lines += ["", "## Examples", "", f"![examples]({fig.name})", "",
                  "## Settings and timings", "", "```",
                  json.dumps(dataclasses.asdict(c), indent=1), "```", "",
                  "| step | seconds |", "|---|---|"]
        for k, v in self.timings.items():
            lines.append(f"| {k} | {v:.1f} |")
        report = self.out / "report.md"
        write_text_atomic(report, "\n".join(lines) + "\n")
        summary = {name: {m: v["hits"] for m, v in r["methods"].items()}
                   for name, r in results.items()}
        write_json_atomic(self.out / "results.json", {
            "hits": summary, "clip_zero_shot": clip_metrics.get("zero_shot", {}),
            "critical": {n: r["info"]["critical"] for n, r in results.items()},
            "stack": {n: r["stack"] for n, r in results.items()},
            "timings": self.timings})
        return report

    def _figure(self, results, ex_attrs, ex_images) -> Path:
        import io

        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        from texter_jax.io.atomic import write_bytes_atomic
        from texter_jax.mapping import concept_alpha, normalize_concept_image

        k = min(self.cfg.figure_examples, len(ex_images))
        names = list(results)
        fig, axes = plt.subplots(len(names) * k, 3, figsize=(11, 2.6 * len(names) * k),
                                 squeeze=False)
        for i, name in enumerate(names):
            r = results[name]
            tex = r["explanations"]["texter"]
            for j in range(k):
                row = axes[i * k + j]
                row[0].imshow(ex_images[j])
                truth = ", ".join(f"{a}={v}" for a, v in r["truths"][j])
                row[0].set_title(f"{name}: truth {truth}", fontsize=8)
                img = np.asarray(normalize_concept_image(tex["concept_image"][j]))
                alpha = np.asarray(concept_alpha(tex["transparency"][j]))
                row[1].imshow(alpha * img + (1 - alpha))
                row[1].set_title("TEXTER concept image", fontsize=8)
                text = []
                for method in METHODS:
                    top = r["methods"][method]["top3"][j]
                    text.append(f"{method}:\n  " + "\n  ".join(top))
                row[2].text(0, 1, "\n".join(text), va="top", fontsize=7, family="monospace")
                for ax in row:
                    ax.axis("off")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        path = self.out / "examples.png"
        write_bytes_atomic(path, buf.getvalue())
        return path
