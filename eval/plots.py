"""PNG plots of an evaluation run (matplotlib Agg, written atomically).

* ``curves.png``: mean insertion and deletion curves (class probability vs fraction of
  the top-k concept directions) per method, with a 95% normal band of the mean;
* ``distributions.png``: per-image score distributions per method (box plots), one
  panel per metric.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from texter_jax.io.atomic import write_bytes_atomic


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_bytes_atomic(path, buf.getvalue())


def plot_curves(path: str | os.PathLike, records: Sequence[dict],
                methods: Sequence[str]) -> Path | None:
    """Mean insertion / deletion curves per method; None if no record has curves."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    drew = False
    for ax, kind in zip(axes, ("insertion", "deletion"), strict=True):
        for m in methods:
            cs = [r["curves"][kind] for r in records
                  if r["method"] == m and r.get("curves", {}).get(kind)]
            if not cs:
                continue
            arr = np.asarray(cs, float)
            mean = arr.mean(0)
            band = 1.96 * arr.std(0, ddof=1) / math.sqrt(len(arr)) if len(arr) > 1 else 0 * mean
            x = np.linspace(0, 1, arr.shape[1])
            ax.plot(x, mean, marker="o", ms=3, label=f"{m} (n={len(arr)})")
            ax.fill_between(x, mean - band, mean + band, alpha=0.2)
            drew = True
        ax.set_title(f"{kind} (feature space)")
        ax.set_xlabel("fraction of top-k concept directions")
        ax.set_ylabel("p(explained class)")
        ax.grid(alpha=0.3)
    if drew:
        axes[0].legend(fontsize=8)
        _save(fig, Path(path))
    plt.close(fig)
    return Path(path) if drew else None


def plot_distributions(path: str | os.PathLike, records: Sequence[dict],
                       methods: Sequence[str], metrics: Sequence[str]) -> Path | None:
    """Box plots of each metric's per-image values per method."""
    metrics = [k for k in metrics if any(r["metrics"].get(k) is not None for r in records)]
    if not metrics:
        return None
    plt = _plt()
    cols = min(4, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    # the grid may hold more axes than metrics: the spare ones are left out below
    for ax, k in zip(axes.flat, metrics, strict=False):
        data, names = [], []
        for m in methods:
            v = [r["metrics"][k] for r in records
                 if r["method"] == m and r["metrics"].get(k) is not None]
            if v:
                data.append(np.asarray(v, float))
                names.append(m)
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(k, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, Path(path))
    plt.close(fig)
    return Path(path)
