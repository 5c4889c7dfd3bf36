"""Summary tables from per-image records: means with percentile-bootstrap 95% CIs.

One row per (method, subset, metric) in ``summary.csv``; ``summary.md`` shows one table
per subset (all / correct / misclassified) with metrics as rows and methods as columns,
each cell ``mean [low, high]``. Both are written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from texter_jax.eval.metrics.bootstrap import bootstrap_table
from texter_jax.eval.metrics.misclassification import SUBSETS, subset_masks
from texter_jax.io.atomic import write_text_atomic

# metric -> (description, which direction is better); order = table order.
METRIC_INFO: dict[str, tuple[str, str]] = {
    "accuracy": ("classifier top-1 accuracy on the sample", "-"),
    "prob": ("probability of the explained (predicted) class", "-"),
    "clip_top1": ("CLIP cos(image, top-1 concept)", "higher"),
    "clip_topk": ("CLIP cos(image, concept), mean of top-k", "higher"),
    "directional_top1": ("d logit_c / d u(top-1 concept)", "higher"),
    "directional_topk": ("d logit_c / d u, mean of top-k", "higher"),
    "directional_cos_top1": ("cos(grad logit_c, u(top-1 concept))", "higher"),
    "directional_cos_topk": ("cos(grad logit_c, u), mean of top-k", "higher"),
    "insertion_auc": ("AUC of p_c inserting top-k concept directions", "higher"),
    "deletion_auc": ("AUC of p_c deleting top-k concept directions", "lower"),
    "hit@1": ("top-1 concept names the measured truth", "higher"),
    "hit@3": ("a top-3 concept names the measured truth", "higher"),
    "hit@5": ("a top-5 concept names the measured truth", "higher"),
    "sanity_head_rho": ("Spearman vs explanation with randomised head", "lower"),
    "sanity_top_rho": ("Spearman vs explanation with randomised head + last block", "lower"),
    "sanity_units_rho": ("Spearman vs explanation of random units", "lower"),
    "sanity_seed_rho": ("Spearman vs another MACO seed (noise floor, reference)", "higher"),
}


def _ordered_metrics(records: Sequence[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        for k in r.get("metrics", {}):
            seen.setdefault(k, None)
    known = [m for m in METRIC_INFO if m in seen or m in ("accuracy", "prob")]
    return known + sorted(m for m in seen if m not in METRIC_INFO)


def summarize(records: Sequence[dict], methods: Sequence[str] | None = None, *,
              seed: int = 0, n_boot: int = 2000, level: float = 0.95) -> list[dict]:
    """Rows ``{method, subset, metric, n, mean, low, high}`` over the records.

    Args:
      records: per-image records (``image``, ``method``, ``pred``, ``label``,
        ``prob``, ``metrics``).
      methods: method order (default: order of first appearance).
      seed: seeds every bootstrap (one key per (method, subset)); explicit so the table
        is reproducible from the records alone.
    """
    if methods is None:
        methods = list(dict.fromkeys(r["method"] for r in records))
    metric_names = _ordered_metrics(records)
    out = []
    for m in methods:
        recs = [r for r in records if r["method"] == m]
        if not recs:
            continue
        pred = np.array([r["pred"] for r in recs])
        label = np.array([r["label"] for r in recs])
        masks = subset_masks(pred, label)
        cols: dict[str, np.ndarray] = {}
        known = label >= 0
        cols["accuracy"] = np.where(known, (pred == label).astype(float), np.nan)
        cols["prob"] = np.array([r["prob"] for r in recs], float)
        for name in metric_names:
            if name in cols:
                continue
            cols[name] = np.array([np.nan if r["metrics"].get(name) is None
                                   else float(r["metrics"][name]) for r in recs])
        for subset in SUBSETS:
            sel = masks[subset]
            if not sel.any():
                continue
            table = bootstrap_table({k: v[sel] for k, v in cols.items()}, seed=seed,
                                    n_boot=n_boot, level=level)
            for name in metric_names:
                n, mean, lo, hi = table[name]
                if n == 0:
                    continue
                out.append({"method": m, "subset": subset, "metric": name, "n": n,
                            "mean": mean, "low": lo, "high": hi})
    return out


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{x:.4f}" if abs(x) < 100 else f"{x:.1f}"


def to_csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "subset", "metric", "n", "mean", "ci_low", "ci_high"])
    for r in rows:
        w.writerow([r["method"], r["subset"], r["metric"], r["n"], repr(float(r["mean"])),
                    repr(float(r["low"])), repr(float(r["high"]))])
    return buf.getvalue()


def to_markdown(rows: Sequence[dict], *, level: float = 0.95, title: str | None = None,
                notes: Sequence[str] = ()) -> str:
    """One table per subset: metrics as rows, methods as columns, ``mean [low, high]``."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = [f"# {title}" if title else "# Evaluation summary", ""]
    lines += [f"Cells: mean [{int(level * 100)}% percentile-bootstrap CI]; (n) = images "
              "with that metric. Better: higher/lower as listed.", ""]
    lines += list(notes) + ([""] if notes else [])
    for subset in SUBSETS:
        sub = [r for r in rows if r["subset"] == subset]
        if not sub:
            continue
        cell = {(r["metric"], r["method"]): r for r in sub}
        metrics = list(dict.fromkeys(r["metric"] for r in sub))
        lines += [f"## {subset}", "",
                  "| metric | better | " + " | ".join(methods) + " |",
                  "|---|---|" + "---|" * len(methods)]
        for name in metrics:
            better = METRIC_INFO.get(name, ("", "-"))[1]
            cells = []
            for m in methods:
                r = cell.get((name, m))
                cells.append("" if r is None else
                             f"{_fmt(r['mean'])} [{_fmt(r['low'])}, {_fmt(r['high'])}] "
                             f"({r['n']})")
            lines.append(f"| {name} | {better} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Metric definitions:", ""]
    for name in dict.fromkeys(r["metric"] for r in rows):
        desc = METRIC_INFO.get(name, ("", ""))[0]
        if desc:
            lines.append(f"- `{name}`: {desc}")
    return "\n".join(lines) + "\n"


def write_summary(out: str | os.PathLike, rows: Sequence[dict], **md_kwargs) -> tuple[Path, Path]:
    """Writes ``summary.csv`` and ``summary.md`` in ``out`` atomically."""
    out = Path(out)
    write_text_atomic(out / "summary.csv", to_csv(rows))
    write_text_atomic(out / "summary.md", to_markdown(rows, **md_kwargs))
    return out / "summary.csv", out / "summary.md"
