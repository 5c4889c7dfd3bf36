"""Plumbing of ``texter explain``: load models and banks, batch images, write results.

The maths lives in :mod:`texter_jax.explain`; this module only loads, batches, caches
and writes (one ``results.json`` and ``figure.png`` per image, atomically).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from apps.artifacts import load_aligner, load_sae
from texter_jax import mapping
from texter_jax.batching import pad_to_multiple
from texter_jax.classifier import Classifier
from texter_jax.concepts.banks import resolve_bank
from texter_jax.emphasis import MacoConfig, default_spectrum, final_objective
from texter_jax.explain import (ExplainConfig, explain_batch, image_keys,
                                text_to_concept_embed_batch)
from texter_jax.figures import explanation_figure
from texter_jax.io.atomic import write_json_atomic
from texter_jax.io.checkpoints import load_model
from texter_jax.io.class_names import read_class_index
from texter_jax.io.images import ImageLoadError, list_images, load_image
from texter_jax.mapping import concept_alpha, normalize_concept_image
from texter_jax.text.tokenizer import ClipTokenizer
from texter_jax.text_cache import TextEmbeddingCache, checkpoint_identity
from texter_jax.types import ImageTextModel

RESULTS_FORMAT = "texter_jax/explanation/v1"


class ExplainSetupError(ValueError):
    """Models, aligner, SAE or banks do not fit together; the message says which."""


def load_class_names(path: str | None, num_classes: int) -> list[str]:
    """Class names in index order (see :func:`texter_jax.io.class_names.read_class_index`)."""

    return read_class_index(path, num_classes)[0]


def text_encoder(clip, variables, clip_dir: str) -> Callable[[list[str]], np.ndarray]:
    """``texts -> float32 [N, E]`` through the CLIP text tower (jit, fixed batch shapes)."""

    if hasattr(clip, "tokenize"):
        tokenize = clip.tokenize
    else:
        tokenize = ClipTokenizer.from_dir(clip_dir)
        cfg = clip.config
        if getattr(cfg, "text_pooling", None) == "eos" and \
                tokenize.eos_token_id != cfg.eos_token_id:
            raise ValueError(
                f"{clip_dir}: the tokenizer's <|endoftext|> id is {tokenize.eos_token_id} but "
                f"the text tower pools at id {cfg.eos_token_id}; every text would get the "
                "same embedding. Use the tokenizer files that belong to this checkpoint.")
    encode = jax.jit(lambda ids: clip.encode_text(variables, ids))

    def fn(texts: list[str]) -> np.ndarray:
        ids = np.asarray(tokenize(list(texts)), np.int32)
        ids, n = pad_to_multiple(ids, 64)  # bucket sizes: few compiles
        return np.asarray(encode(jnp.asarray(ids)))[:n]

    return fn


@dataclasses.dataclass
class ExplainRun:
    """One ``texter explain`` invocation."""

    args: Any

    @classmethod
    def from_args(cls, args) -> "ExplainRun":
        return cls(args)

    # -- set-up -------------------------------------------------------------------

    def load(self) -> None:
        """Loads classifier, CLIP (both towers), aligner, SAE, class names, text cache."""

        a = self.args
        self.classifier, cvars = load_model(a.classifier)
        if not isinstance(self.classifier, Classifier):
            raise ExplainSetupError(f"{a.classifier} holds a {self.classifier.family} model, "
                                    "not a classifier")
        self.cvars = jax.tree.map(jax.numpy.asarray, cvars)
        self.clip, clip_vars = load_model(a.clip)
        self.clip_vars = jax.tree.map(jax.numpy.asarray, clip_vars)
        if not isinstance(self.clip, ImageTextModel):
            raise ExplainSetupError(f"{a.clip} holds a {self.clip.family} model, not a CLIP")
        self.aligner = load_aligner(a.aligner)
        d, e = self.classifier.feature_dim, self.clip.embed_dim
        if self.aligner.w.shape != (e, d):
            raise ExplainSetupError(
                f"aligner {a.aligner}: W is {self.aligner.w.shape}, but the classifier has "
                f"{d} features and the CLIP embeds in {e} (expected W [{e}, {d}])")
        self.use_sae = a.method == "texter" and not a.no_sae
        self.sae = None
        if self.use_sae:
            if a.sae is None:
                raise ExplainSetupError("TEXTER uses a TopK SAE by default: pass --sae PATH "
                                        "(or --no-sae to work on classifier features)")
            self.sae = load_sae(a.sae)
            d_sae = self.sae.params["encoder"]["kernel"].shape[0]
            if d_sae != d:
                raise ExplainSetupError(f"SAE {a.sae} takes {d_sae}-d inputs, but "
                                        f"the classifier has {d} features")
        self.class_names = load_class_names(a.class_names, self.classifier.num_classes)
        cache_root = Path(a.text_cache) if a.text_cache else Path(a.out) / ".text_cache"
        self.text_cache = TextEmbeddingCache(cache_root, checkpoint_identity(a.clip))
        self.encode_texts = text_encoder(self.clip, self.clip_vars, a.clip)

    def _explain_config(self):
        a = self.args
        maco = MacoConfig(canvas=a.canvas, steps=a.steps, n_crops=a.crops,
                          crop_size=self.classifier.image_size)
        return ExplainConfig.preset(
            getattr(a, "preset", "release"), k_neu=a.k_neu, ig_steps=a.ig_steps,
            use_sae=self.use_sae, ranked_units=max(16, a.k_neu), maco=maco,
            map_crops=a.map_crops, compute_dtype="bfloat16" if a.bf16 else None)

    def bank_for(self, class_name: str, image_name: str) -> list[str]:
        a = self.args
        return resolve_bank(class_name, root=a.bank_root, image_name=image_name,
                            files=a.bank, use_generic=False if a.no_generic else None)

    # -- the run ------------------------------------------------------------------

    def run(self) -> int:
        a = self.args
        try:
            self.load()
            config = self._explain_config() if a.method == "texter" else None
            paths = list_images(a.images)
        except (ExplainSetupError, FileNotFoundError, ValueError) as e:
            print(f"texter explain: error: {e}", file=sys.stderr)
            return 2
        if not paths:
            print("texter explain: error: no images found", file=sys.stderr)
            return 2
        magnitude = None
        if config is not None:
            magnitude = default_spectrum(config.maco.canvas, a.spectrum)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        size = self.classifier.image_size
        resize = int(round(size * 256 / 224))  # ImageNet eval: Resize 256, CenterCrop 224
        names = _unique_names(paths)
        errors: list[dict[str, str]] = []
        written = 0
        t0 = time.perf_counter()
        bar = tqdm(total=len(paths), desc=f"explain ({a.method})", unit="img")
        for start in range(0, len(paths), a.batch_size):
            chunk = list(range(start, min(start + a.batch_size, len(paths))))
            imgs, idx = [], []
            for i in chunk:
                try:
                    imgs.append(load_image(paths[i], resize=resize, crop=size))
                    idx.append(i)
                except ImageLoadError as e:
                    errors.append({"path": str(paths[i]), "error": str(e)})
                    tqdm.write(f"skipped: {e}", file=sys.stderr)
            if not imgs:
                bar.update(len(chunk))
                continue
            batch = np.stack(imgs)
            if a.method == "texter":
                ex = explain_batch(self.classifier, self.cvars, self.aligner, None, batch,
                                   image_keys(a.seed, idx), config, sae=self.sae,
                                   magnitude=magnitude)
                labels, probs, emb = ex.label, ex.prob, ex.crop_embeddings
            else:
                labels, probs, emb = text_to_concept_embed_batch(
                    self.classifier, self.cvars, self.aligner, batch)
                ex = None
            for j, i in enumerate(idx):
                cls = self.class_names[int(labels[j])]
                texts = self.bank_for(cls, paths[i].stem)
                text_emb = self.text_cache.get(texts, self.encode_texts)
                scores = np.asarray(mapping.retrieve(emb[j:j + 1], text_emb))[0]
                ranked = mapping.rank_concepts(scores, texts)
                record = {
                    "format": RESULTS_FORMAT,
                    "image_filename": paths[i].name,
                    "image_path": str(paths[i]),
                    "method": a.method,
                    "use_sae": self.use_sae,
                    "predicted_label": int(labels[j]),
                    "pred_class_name": cls,
                    "pred_prob": float(probs[j]),
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
                folder = out / names[i]
                write_json_atomic(folder / "results.json", record)
                if not a.no_figures:
                    self._figure(folder / "figure.png", batch[j], record, ranked, ex, j)
                written += 1
            bar.update(len(chunk))
        bar.close()
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
