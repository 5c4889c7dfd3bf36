"""What ``texter eval`` leaves at the end of a run: the summary, the plots, ``run.json``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from texter_jax.eval.methods import config_dict
from texter_jax.eval.plots import plot_curves, plot_distributions
from texter_jax.eval.records import RecordStore, stable_hash
from texter_jax.eval.sanity import describe
from texter_jax.eval.summary import METRIC_INFO, summarize, write_summary
from texter_jax.figures import save_png
from texter_jax.io.atomic import write_json_atomic
from texter_jax.io.html_page import Card, markdown_to_html, write_page
from texter_jax.io.images import ImageLoadError, load_preprocessed

THUMB = 128  # side of the page's input thumbnails


def write_run_report(run, store: RecordStore, new: int, elapsed: float, pending: int) -> None:
    """summary.md / summary.csv, curves.png / distributions.png and run.json for the
    records in ``store``; ``run`` is the :class:`texter_jax.eval.runner.EvalRun` that made them."""
    a, out = run.args, Path(run.args.out)
    labels = [m.label for m in run.methods]
    methods = labels + [m for m in dict.fromkeys(r["method"] for r in store.records)
                        if m not in labels]
    rows = summarize(store.records, methods, seed=a.seed, n_boot=a.n_boot, level=a.ci)
    notes = [f"Classifier `{a.classifier}`, CLIP `{a.clip}`, aligner `{a.aligner}`"
             + (f", SAE `{a.sae}`" if a.sae else "") + f"; {len(run.sample)} sampled "
             f"images, seed {a.seed}, top-k {a.top_k}, pull-back {a.pullback}, "
             f"centre {a.direction_center}, baseline {a.baseline}."]
    csv_path, md_path = write_summary(out, rows, level=a.ci, notes=notes)
    plots = []
    if not a.no_plots and store.records:
        for p in (plot_curves(out / "curves.png", store.records, methods),
                  plot_distributions(out / "distributions.png", store.records, methods,
                                     [k for k in METRIC_INFO
                                      if k not in ("accuracy", "prob")])):
            if p is not None:
                plots.append(str(p))
    per_method = {k: {"seconds_per_image": float(np.mean(v)), "batches": len(v)}
                  for k, v in run.timing.items()}
    cache = run.producer.cache
    write_json_atomic(out / "run.json", {
        "format": "texter_jax/eval-run/v1",
        "args": {k: v for k, v in vars(a).items() if k != "func"},
        "methods": [{"label": m.label, "base": m.base, "config": config_dict(m.config),
                     "explain_hash": run.explain_hash[m.label]} for m in run.methods],
        "metric_config": run.metric_config, "label_rule": run.label_rule,
        "sampled": len(run.sample), "records": len(store), "new_records": new,
        "pending_before": pending, "seconds": round(elapsed, 2),
        "pairs_per_minute": round(60 * new / elapsed, 2) if new and elapsed > 0 else None,
        "per_method": per_method,
        "skipped": [{"image": k, "error": v} for k, v in run.skipped.items()],
        "sanity_randomised": {k: {"n_tensors": len(v), "modules": describe(v)}
                              for k, v in run.producer.variant_paths.items()},
        "cache": {"folder": str(cache.root), "hits": cache.hits, "misses": cache.misses},
        "outputs": {"summary_md": str(md_path), "summary_csv": str(csv_path),
                    "plots": plots}})
    write_eval_page(run, store, md_path, plots)
    rate = f" ({60 * new / elapsed:.1f} pairs/min)" if new and elapsed > 0 else ""
    print(f"wrote {new} new record(s) in {elapsed:.1f}s{rate}; {len(store)} in "
          f"{out / 'records.jsonl'}; summary: {md_path}"
          + (f"; skipped {len(run.skipped)} unreadable image(s), listed in run.json"
             if run.skipped else ""))


def write_eval_page(run, store: RecordStore, md_path: Path | None = None,
                    plots: list[str] = ()) -> Path:
    """``index.html``: a card per (image, method) record, the summary and plots on top
    (none while the run is going: ``md_path`` None); input thumbnails are written once
    under ``thumbs/``."""
    out = Path(run.args.out)
    paths = {im.rel: im.path for im in run.sample}
    cards = []
    for r in store.records:
        thumb = f"thumbs/{stable_hash(r['image'])}.png"
        if not (out / thumb).is_file() and r["image"] in paths:
            try:
                save_png(out / thumb, load_preprocessed(paths[r["image"]], "resize", THUMB))
            except ImageLoadError:
                thumb = None
        hit = r["metrics"].get("hit@1")
        cards.append(Card(name=r["image"], image=thumb, pred=r["pred_name"], prob=r["prob"],
                          concepts=[(t, s) for t, s in r["top_concepts"]],
                          correct=r.get("correct"), method=r["method"],
                          hit=None if hit is None else bool(hit)))
    summary = "<p>running: the summary comes at the end</p>" if md_path is None else (
        markdown_to_html(md_path.read_text()) + "".join(
            f'<img src="{Path(p).name}" alt="plot" style="max-width:100%">' for p in plots))
    return write_page(out, title=f"texter eval: {len(store)} records", cards=cards,
                      settings=run.metric_config, summary_html=summary, top=5)
