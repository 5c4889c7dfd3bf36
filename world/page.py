"""``index.html`` of ``texter demo``: every held-out image of every classifier, the methods
side by side, hits against the measured truth marked; the report's tables on top."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from texter_jax.eval.metrics.hits import hits_at_k
from texter_jax.figures import rgba_concept_image, save_png
from texter_jax.io.html_page import Card, markdown_to_html, write_page
from texter_jax.mapping import concept_alpha, normalize_concept_image
from texter_jax.world.attributes import DISCRETE
from texter_jax.world.captions import concept_bank

THUMB = 128
HIT_K = 3  # a card is marked a hit when a top-3 concept names the truth


def write_world_page(out: Path, cfg, results: dict, ex_images: np.ndarray) -> Path:
    """Thumbnails under ``out/page/`` and ``out/index.html``; returns the page's path."""
    phrases, meaning = concept_bank()
    folder = out / "page"
    for i, image in enumerate(ex_images):
        save_png(folder / f"input_{i}.png", image, side=THUMB)
    cards = []
    for name, r in results.items():
        task = r["info"].get("task") or {}
        values = DISCRETE.get(task.get("label", ""), ())
        for method, rec in r["explanations"].items():
            order = np.argsort(-rec["scores"], axis=1, kind="stable")
            hits = hits_at_k([[phrases[j] for j in row[:HIT_K]] for row in order],
                             r["truths"], meaning, HIT_K)
            for i in range(len(rec["label"])):
                concept = None
                if "concept_image" in rec and i < len(rec["concept_image"]):
                    concept = f"page/{name}_{method}_{i}.png"
                    save_png(out / concept, rgba_concept_image(
                        normalize_concept_image(rec["concept_image"][i]),
                        concept_alpha(rec["transparency"][i])[..., 0]), side=2 * THUMB)
                label = int(rec["label"][i])
                pred = values[label] if label < len(values) else str(label)
                cards.append(Card(
                    name=f"{name} #{i:02d}", image=f"page/input_{i}.png", concept=concept,
                    pred=f"{name}: {pred}", prob=float(rec["prob"][i]), method=method,
                    concepts=[(phrases[j], float(rec["scores"][i, j])) for j in order[i, :5]],
                    hit=bool(hits[i])))
    report = (out / "report.md").read_text()
    tables = report.split("## Examples")[0]  # the figure grid has its own PNG
    settings = {k: getattr(cfg, k) for k in ("image_size", "explain_images", "ig_steps",
                                             "k_neu", "canvas", "maco_steps", "preset",
                                             "spectrum", "seed")}
    return write_page(out, title=f"texter demo: {len(results)} classifiers, "
                      f"{len(ex_images)} held-out images each",
                      cards=cards, settings=settings, summary_html=markdown_to_html(tables),
                      top=5)
