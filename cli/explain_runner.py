"""Plumbing of ``texter explain``: load models and banks, batch images, write results.

The maths lives in :mod:`texter_jax.explain`; this module only loads, batches, caches
and writes (one ``results.json`` and ``figure.png`` per image, atomically).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from texter_jax import mapping
from texter_jax.converters.artifacts import load_session
from texter_jax.emphasis import MacoConfig, default_spectrum, final_objective
from texter_jax.emphasis.progress import increments
from texter_jax.explain import ExplainConfig, image_keys
from texter_jax.figures import explanation_figure, rgba_concept_image, save_png
from texter_jax.io.atomic import write_json_atomic
from texter_jax.io.html_page import Card, write_page
from texter_jax.io.images import ImageLoadError, list_images, load_preprocessed
from texter_jax.mapping import concept_alpha, normalize_concept_image
from texter_jax.plan import BatchTooLarge
from texter_jax.session import Banks, SessionError

RESULTS_FORMAT = "texter_jax/explanation/v1"
THUMB = 128  # side of the page's input thumbnails (concept images: twice that)


class ExplainSetupError(ValueError):
    """Models, aligner, SAE or banks do not fit together; the message says which."""


@dataclasses.dataclass
class ExplainRun:
    """One ``texter explain`` invocation."""

    args: Any

    @classmethod
    def from_args(cls, args) -> ExplainRun:
        return cls(args)

    # -- set-up -------------------------------------------------------------------

    def load(self) -> None:
        """The session (classifier, CLIP, aligner, SAE, class names, banks, text cache)."""
        a = self.args
        self.use_sae = a.method == "texter" and not a.no_sae
        if self.use_sae and a.sae is None:
            raise ExplainSetupError("TEXTER uses a TopK SAE by default: pass --sae PATH "
                                    "(or --no-sae to work on classifier features)")
        self.session = load_session(
            a.classifier, a.clip, a.aligner, a.sae if self.use_sae else None,
            class_names=a.class_names,
            text_cache=a.text_cache or Path(a.out) / ".text_cache",
            banks=Banks(root=a.bank_root, files=tuple(a.bank),
                        use_generic=False if a.no_generic else None))
        self.classifier = self.session.classifier

    def _explain_config(self):
        a = self.args
        maco = MacoConfig(canvas=a.canvas, steps=a.steps, n_crops=a.crops,
                          crop_size=self.classifier.image_size)
        return ExplainConfig.preset(
            getattr(a, "preset", "release"), k_neu=a.k_neu, ig_steps=a.ig_steps,
            use_sae=self.use_sae, ranked_units=max(16, a.k_neu), maco=maco,
            map_crops=a.map_crops, compute_dtype="bfloat16" if a.bf16 else None)

    # -- the run ------------------------------------------------------------------

    def run(self) -> int:
        a = self.args
        try:
            self.load()
            config = self._explain_config() if a.method == "texter" else None
            paths = list_images(a.images)
        except (ExplainSetupError, SessionError, FileNotFoundError, ValueError) as e:
            print(f"texter explain: error: {e}", file=sys.stderr)
            return 2
        if not paths:
            print("texter explain: error: no images found", file=sys.stderr)
            return 2
        magnitude = None
        if config is not None:
            magnitude = default_spectrum(config.maco.canvas, a.spectrum)
        session = self.session
        batch_size = a.batch_size
        if batch_size == "auto":
            if config is None:  # Text-to-Concept: one classifier pass, any batch fits
                batch_size = 64
            else:
                try:
                    choice = session.batch_for(config, images=len(paths))
                except BatchTooLarge as e:
                    print(f"texter explain: error: {e}", file=sys.stderr)
                    return 2
                batch_size = choice.batch
                print(f"texter explain: {choice.describe()}", file=sys.stderr)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        size = self.classifier.image_size
        names = _unique_names(paths)
        errors: list[dict[str, str]] = []
        cards: list[Card] = []
        written = 0
        t0 = time.perf_counter()
        bar = tqdm(total=len(paths), desc=f"explain ({a.method})", unit="img")
        # MACO's steps of the running batch (each retry round starts the bar again).
        steps = tqdm(total=config.maco.steps if a.method == "texter" else 0, desc="MACO",
                     unit="step", leave=False, disable=a.method != "texter")
        progress = increments(steps.update, steps.reset)
        for start in range(0, len(paths), batch_size):
            chunk = list(range(start, min(start + batch_size, len(paths))))
            imgs, idx = [], []
            for i in chunk:
                try:
                    imgs.append(load_preprocessed(paths[i], "imagenet", size))
                    idx.append(i)
                except ImageLoadError as e:
                    errors.append({"path": str(paths[i]), "error": str(e)})
                    tqdm.write(f"skipped: {e}", file=sys.stderr)
            if not imgs:
                bar.update(len(chunk))
                continue
            batch = np.stack(imgs)
            if a.method == "texter":
                steps.reset()
                ex = session.explain(batch, image_keys(a.seed, idx), config,
                                     magnitude=magnitude, progress=progress)
                labels, probs, emb = ex.label, ex.prob, ex.crop_embeddings
            else:
                labels, probs, emb = session.text_to_concept(batch)
                ex = None
            for j, i in enumerate(idx):
                cls = session.class_names[int(labels[j])]
                texts = session.bank_for(cls, paths[i].stem)
                text_emb = session.text_embeddings(texts)
                scores = np.asarray(mapping.retrieve(emb[j:j + 1], text_emb))[0]
                ranked = mapping.rank_concepts(scores, texts)
                record = self._record(paths[i], cls, labels[j], probs[j], ranked,
                                      ex, j, config)
                folder = out / names[i]
                write_json_atomic(folder / "results.json", record)
                if not a.no_figures:
                    self._figure(folder / "figure.png", batch[j], record, ranked, ex, j)
                cards.append(self._card(folder, names[i], batch[j], record, ranked, ex, j))
                written += 1
            bar.update(len(chunk))
            self._page(out, cards, t0)  # refreshed as the run goes
        bar.close()
        steps.close()
        elapsed = time.perf_counter() - t0
        write_json_atomic(out / "run.json", {
            "images": len(paths), "written": written, "skipped": errors,
            "seconds": round(elapsed, 2), "method": a.method,
            "classifier": str(a.classifier), "clip": str(a.clip), "aligner": str(a.aligner),
            "sae": str(a.sae) if self.use_sae else None})
        print(f"wrote {written} explanation(s) to {out} in {elapsed:.1f}s"
              + (f"; skipped {len(errors)} unreadable file(s), listed in {out / 'run.json'}"
                 if errors else ""))
        return 0 if written else 1

    def _record(self, path: Path, cls: str, label, prob, ranked, ex, j: int, config) -> dict:
        """results.json of one image (``ex`` None for the Text-to-Concept baseline)."""
        a = self.args
        record = {
            "format": RESULTS_FORMAT,
            "image_filename": path.name,
            "image_path": str(path),
            "method": a.method,
            "use_sae": self.use_sae,
            "predicted_label": int(label),
            "pred_class_name": cls,
            "pred_prob": float(prob),
            "ranked_texts": [[t, round(float(s), 6)] for t, s in ranked],
            "num_concepts_total": len(ranked),
            "seed": a.seed,
        }
        if ex is not None:
            valid = ex.unit_ids[j] >= 0
            record.update({
                "top_k_influential_indices": ex.unit_ids[j][valid].tolist(),
                "influence_scores": [float(s) for s in ex.unit_scores[j][valid]],
                "maco_retries": int(ex.retries[j]),
                "maco_final_objective": float(final_objective(ex.objective_trace[j])),
                "maco_steps_run": int(np.sum(~np.isnan(ex.objective_trace[j]))),
                "config": {"k_neu": config.k_neu, "ig_steps": config.ig_steps,
                           "steps": config.maco.steps, "canvas": config.maco.canvas,
                           "crops": config.maco.n_crops,
                           "preset": getattr(a, "preset", "release"),
                           "map_crops": config.map_crops,
                           "compute_dtype": config.compute_dtype or "float32"},
            })
        return record

    def _card(self, folder: Path, name: str, image, record, ranked, ex, j: int) -> Card:
        """The page's card; with figures on, the thumbnails it shows are written too."""
        thumb = concept = None
        if not self.args.no_figures:
            save_png(folder / "input.png", image, side=THUMB)
            thumb = f"{name}/input.png"
            if ex is not None:
                rgba = rgba_concept_image(normalize_concept_image(ex.concept_image[j]),
                                          concept_alpha(ex.transparency[j])[..., 0])
                save_png(folder / "concept.png", rgba, side=2 * THUMB)
                concept = f"{name}/concept.png"
        return Card(name=record["image_filename"], image=thumb, concept=concept,
                    pred=record["pred_class_name"], prob=record["pred_prob"],
                    concepts=ranked, method=self.args.method)

    def _page(self, out: Path, cards: list[Card], t0: float) -> None:
        a = self.args
        settings = {"method": a.method, "classifier": str(a.classifier), "clip": str(a.clip),
                    "aligner": str(a.aligner), "sae": str(a.sae) if self.use_sae else None,
                    "seed": a.seed, "preset": a.preset, "k_neu": a.k_neu, "steps": a.steps,
                    "canvas": a.canvas, "seconds so far": round(time.perf_counter() - t0, 1)}
        write_page(out, title=f"texter explain: {len(cards)} image(s)", cards=cards,
                   settings=settings, top=a.top)

    def _figure(self, path, image, record, ranked, ex, j):
        title = f"{record['image_filename']}\npred: {record['pred_class_name']} " \
                f"({record['pred_prob']:.3f})"
        kwargs = {}
        if ex is not None:
            kwargs = dict(concept_image=np.asarray(normalize_concept_image(ex.concept_image[j])),
                          concept_alpha=np.asarray(concept_alpha(ex.transparency[j]))[..., 0])
        explanation_figure(path, image=image, title=title, concepts=ranked,
                           top=self.args.top, **kwargs)


def _unique_names(paths: list[Path]) -> list[str]:
    """Output folder name per image: its stem, suffixed with its index on collision."""
    stems = [p.stem for p in paths]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [s if counts[s] == 1 else f"{s}_{i:05d}" for i, s in enumerate(stems)]
