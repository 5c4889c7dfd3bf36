"""What an SAE user reads first: reconstruction, sparsity, dead and dense latents, and the
cost of splicing the SAE into the classifier, on a set of feature rows.

:func:`sae_report` streams the rows in batches through the inference path
(:func:`texter_jax.sae.sae_apply`: TopK, or the stored BatchTopK threshold) and returns

* ``r2``: the release's pooled R^2, ``1 - SSE / sum((x - mean(x))^2)`` (one mean over all
  entries);
* ``explained_variance``: ``1 - sum_j Var(x_j - x_hat_j) / sum_j Var(x_j)`` (each
  feature centred on its own mean, as SAE libraries report it);
* ``l0``: mean active codes per row; ``dead``: fraction of latents that never fire on
  these rows; ``dense``: fraction that fire on more than ``dense_above`` of them;
* with a classifier ``head`` (features [B, d] -> logits [B, C]): ``agreement`` (the
  spliced prediction equals the original's), ``kl`` (mean KL(p(x) || p(x_hat)), nats),
  and with labels ``accuracy`` / ``accuracy_spliced``.

``firing_frequency`` (float [n], the fraction of rows each latent fires on) comes back
beside the scalars; :func:`plot_firing_frequency` draws its histogram.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from texter_jax.sae import SaeParams, sae_apply

L0_THRESHOLD = 1e-6  # overcomplete.metrics.l0_eps, as the training logs count


def sae_report(params: SaeParams, rows, top_k: int, *, head: Callable | None = None,
               labels: np.ndarray | None = None, batch_size: int = 1024,
               dense_above: float = 0.1) -> tuple[dict[str, float], np.ndarray]:
    """``(metrics, firing_frequency [n])`` of the SAE on ``rows`` (anything with
    ``len``, ``dim`` and ``take(indices) -> float32 [M, d]``; see the module docstring).

    ``labels`` int [N] (-1 where unknown) count for the accuracies when ``head`` is given.
    """
    n_rows = len(rows)
    encode = jax.jit(lambda p, x: sae_apply(p, x, top_k)[1:])
    splice = None if head is None else jax.jit(_splice_stats(head))
    n_lat = params["encoder"]["kernel"].shape[1]
    fires = np.zeros(n_lat, np.int64)
    s = {"sse": 0.0, "sum": 0.0, "sq": 0.0, "l0": 0.0, "agree": 0.0, "kl": 0.0,
         "hit": 0.0, "hit_spliced": 0.0, "labelled": 0}
    col_sum = np.zeros(rows.dim)
    col_sq = np.zeros(rows.dim)
    res_sum = np.zeros(rows.dim)
    res_sq = np.zeros(rows.dim)
    for lo in range(0, n_rows, batch_size):
        idx = np.arange(lo, min(lo + batch_size, n_rows))
        x = rows.take(idx)
        codes, x_hat = (np.asarray(a, np.float64) for a in encode(params, jnp.asarray(x)))
        xf = np.asarray(x, np.float64)
        r = xf - x_hat
        s["sse"] += float(np.sum(r ** 2))
        s["sum"] += float(np.sum(xf))
        s["sq"] += float(np.sum(xf ** 2))
        col_sum += xf.sum(0)
        col_sq += (xf ** 2).sum(0)
        res_sum += r.sum(0)
        res_sq += (r ** 2).sum(0)
        active = np.abs(codes) >= L0_THRESHOLD
        s["l0"] += float(active.sum())
        fires += (codes > 0).sum(0)
        if splice is not None:
            agree, kl, pred, pred_spliced = (np.asarray(a) for a in splice(
                jnp.asarray(x), jnp.asarray(x_hat, jnp.float32)))
            s["agree"] += float(agree.sum())
            s["kl"] += float(kl.sum())
            if labels is not None:
                lab = np.asarray(labels)[idx]
                known = lab >= 0
                s["labelled"] += int(known.sum())
                s["hit"] += float((pred[known] == lab[known]).sum())
                s["hit_spliced"] += float((pred_spliced[known] == lab[known]).sum())
    size = n_rows * rows.dim
    sst = s["sq"] - s["sum"] ** 2 / size
    var = col_sq / n_rows - (col_sum / n_rows) ** 2
    res_var = res_sq / n_rows - (res_sum / n_rows) ** 2
    freq = fires / n_rows
    out = {"rows": n_rows, "r2": 1.0 - s["sse"] / max(sst, 1e-30),
           "explained_variance": 1.0 - float(res_var.sum()) / max(float(var.sum()), 1e-30),
           "l0": s["l0"] / n_rows, "dead": float(np.mean(fires == 0)),
           "dense": float(np.mean(freq > dense_above))}
    if splice is not None:
        out.update(agreement=s["agree"] / n_rows, kl=s["kl"] / n_rows)
        if s["labelled"]:
            out.update(accuracy=s["hit"] / s["labelled"],
                       accuracy_spliced=s["hit_spliced"] / s["labelled"])
    return out, freq


def _splice_stats(head: Callable):
    def stats(x, x_hat):
        a, b = head(x), head(x_hat)
        log_p, log_q = jax.nn.log_softmax(a), jax.nn.log_softmax(b)
        kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
        pa, pb = jnp.argmax(a, -1), jnp.argmax(b, -1)
        return pa == pb, kl, pa, pb
    return stats


def plot_firing_frequency(freq: np.ndarray, path: str | Path, *, title: str = "") -> Path:
    """Histogram of log10 firing frequency (dead latents counted in their own bar) as a
    PNG at ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    freq = np.asarray(freq, np.float64)
    alive = freq[freq > 0]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    if alive.size:
        ax.hist(np.log10(alive), bins=50, color="#3b6ea8")
    ax.set_xlabel("log10 fraction of rows a latent fires on")
    ax.set_ylabel("latents")
    dead = int(np.sum(freq == 0))
    ax.set_title((title + "\n" if title else "") +
                 f"{freq.size} latents, {dead} dead ({100 * dead / max(freq.size, 1):.1f} %)",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_sae_report(out: str | Path, params: SaeParams, rows, top_k: int, *,
                     head: Callable | None = None, labels: np.ndarray | None = None,
                     what: str = "") -> dict[str, float]:
    """Runs :func:`sae_report`, writes ``<out>/sae_report.json`` and
    ``<out>/firing_frequency.png``, and returns the metrics."""
    from texter_jax.io.atomic import write_json_atomic

    out = Path(out)
    metrics, freq = sae_report(params, rows, top_k, head=head, labels=labels)
    write_json_atomic(out / "sae_report.json", {"on": what, **metrics})
    plot_firing_frequency(freq, out / "firing_frequency.png",
                          title=f"firing frequency on {what}" if what else "")
    return metrics


def format_report(m: dict[str, float]) -> str:
    """One line of the metrics for a terminal."""
    line = (f"R2 {m['r2']:.4f}  explained variance {m['explained_variance']:.4f}  "
            f"L0 {m['l0']:.1f}  dead {100 * m['dead']:.1f}%  dense {100 * m['dense']:.1f}%")
    if "kl" in m:
        line += f"  spliced: agreement {m['agreement']:.3f}  KL {m['kl']:.4g}"
    if "accuracy" in m:
        line += f"  accuracy {m['accuracy']:.3f} -> {m['accuracy_spliced']:.3f}"
    return line
