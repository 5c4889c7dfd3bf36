"""The demo's explanations: every method on the held-out images of one classifier, through
the session (the library path real models take), cached per configuration."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from texter_jax import mapping
from texter_jax.emphasis import MacoConfig
from texter_jax.emphasis.progress import increments
from texter_jax.eval.records import stable_hash
from texter_jax.explain import ExplainConfig, image_keys
from texter_jax.session import Session
from texter_jax.world.demo_config import MACO_METHODS, METHODS, DemoConfig

# Explanation fields kept for every image, and (for the figure) for the first few.
_PER_IMAGE = ("label", "prob", "retries", "crop_labels", "unit_ids")
_FIGURE = ("concept_image", "transparency")


def _cache_key(c: DemoConfig, method: str, n: int, stack_key: str, spectrum_id: str) -> str:
    key = {"m": method, "ig": c.ig_steps, "k": c.k_neu, "canvas": c.canvas,
           "steps": c.maco_steps, "crops": c.maco_crops, "map": c.map_crops,
           "n": n, "seed": c.seed, "size": c.image_size,
           "stack": stack_key, "spectrum": spectrum_id}
    if c.preset != "release" and method != "text2concept":
        key["preset"] = c.preset  # release keys as before presets existed
    return stable_hash(key)


def explanation_path(c: DemoConfig, cache: Path, name: str, method: str, n: int,
                     stack_key: str, spectrum_id: str) -> Path:
    """Where a demo run caches one classifier's explanations by one method (``.npz``)."""
    return cache / "explanations" / (
        f"{name}_{method}_{_cache_key(c, method, n, stack_key, spectrum_id)}.npz")


def explain_world(c: DemoConfig, cache: Path, name: str, session: Session, text_emb,
                  images, stack_key: str, magnitude, spectrum_id: str, *,
                  methods=METHODS, bar: Callable | None = None,
                  timings: dict | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per method: concept scores [N, T] and labels, probabilities, retries, class
    consistency inputs, units and MACO steps run [N]; concept images for the figure.

    ``bar(desc, total)`` opens a progress bar (tqdm-like); ``timings`` collects seconds.
    """
    maco = MacoConfig(canvas=c.canvas, steps=c.maco_steps, n_crops=c.maco_crops,
                      crop_size=session.classifier.image_size)
    out: dict[str, dict[str, np.ndarray]] = {}
    for method in methods:
        path = explanation_path(c, cache, name, method, len(images), stack_key, spectrum_id)
        if path.is_file():
            out[method] = dict(np.load(path))
            continue
        t = time.perf_counter()
        if method == "text2concept":
            label, prob, emb = session.text_to_concept(images)
            scores = np.asarray(mapping.retrieve(jnp.asarray(emb), jnp.asarray(text_emb)))
            rec = {"label": label, "prob": prob, "scores": scores}
        else:
            cfg = ExplainConfig.preset(c.preset, k_neu=c.k_neu, ig_steps=c.ig_steps,
                                       maco=maco, map_crops=c.map_crops,
                                       **MACO_METHODS[method])
            rec = _explain_texter(c, session, cfg, text_emb, images, magnitude,
                                  bar(f"{name} {method} (MACO)", c.maco_steps) if bar else None)
        if timings is not None:
            timings[f"explain {name} {method}"] = time.perf_counter() - t
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial.npz")
        np.savez(tmp, **rec)
        tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
        out[method] = rec
    return out


def _explain_texter(c: DemoConfig, session: Session, cfg: ExplainConfig, text_emb, images,
                    magnitude, bar) -> dict[str, np.ndarray]:
    parts = []

    def grow():  # a retry round or the next batch: the bar grows by one run
        if bar.n >= bar.total:
            bar.total += c.maco_steps

    progress = None if bar is None else increments(bar.update, grow)
    for s in range(0, len(images), c.batch_size):
        batch = images[s:s + c.batch_size]
        parts.append(session.explain(batch, image_keys(c.seed, range(s, s + len(batch))),
                                     cfg, text_emb=text_emb, magnitude=magnitude,
                                     progress=progress))
    if bar is not None:
        bar.close()
    rec = {f: np.concatenate([getattr(p, f) for p in parts]) for f in _PER_IMAGE}
    rec["scores"] = np.concatenate([p.concept_scores for p in parts])
    rec["steps_run"] = np.concatenate(
        [np.sum(~np.isnan(p.objective_trace), axis=1) for p in parts])
    for f in _FIGURE:
        rec[f] = np.concatenate([getattr(p, f) for p in parts])[:c.figure_examples]
    return rec
