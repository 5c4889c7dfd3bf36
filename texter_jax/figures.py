"""PNG figures of explanations: input, concept image with transparency, top concepts.

matplotlib runs with the non-interactive Agg backend; figures are written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from texter_jax.io.atomic import write_bytes_atomic


def _agg():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def rgba_concept_image(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Concept image [H, W, 3] in [0, 1] plus alpha [H, W] in [0, 1] -> RGBA [H, W, 4]."""
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    alpha = np.clip(np.asarray(alpha, np.float32), 0.0, 1.0)
    if alpha.ndim == 3:
        alpha = alpha.mean(-1)
    return np.concatenate([image, alpha[..., None]], axis=-1)


def explanation_figure(path: str | os.PathLike, *, image: np.ndarray, title: str,
                       concepts: Sequence[tuple[str, float]],
                       concept_image: np.ndarray | None = None,
                       concept_alpha: np.ndarray | None = None, top: int = 10) -> None:
    """Writes a three-panel PNG: input | concept image (transparency) | top-``top`` bars.

    Args:
      path: output PNG.
      image: input float [H, W, 3] in [0, 1].
      title: e.g. ``"pred: tabby cat (0.93)"``.
      concepts: ranked ``(text, score)`` pairs, best first.
      concept_image: MACO image float [S, S, 3] in [0, 1], or None (baseline methods).
      concept_alpha: transparency [S, S] or [S, S, 3] in [0, 1].
    """
    plt = _agg()
    shown = list(concepts)[:top]
    ncols = 3 if concept_image is not None else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4.6),
                             gridspec_kw={"width_ratios": [1] * (ncols - 1) + [1.4]})
    axes[0].imshow(np.clip(image, 0, 1))
    axes[0].set_title(title, fontsize=10)
    axes[0].axis("off")
    if concept_image is not None:
        ax = axes[1]
        # A checkerboard shows where the concept image is transparent.
        s = concept_image.shape[0]
        cells = max(1, s // 16)
        yy, xx = np.mgrid[:s, :s] // cells
        board = np.where(((yy + xx) % 2)[..., None] == 0, 0.85, 1.0) * np.ones(3)
        ax.imshow(board)
        alpha = concept_alpha if concept_alpha is not None else np.ones(concept_image.shape[:2])
        ax.imshow(rgba_concept_image(concept_image, alpha))
        ax.set_title("concept image (MACO)", fontsize=10)
        ax.axis("off")
    ax = axes[-1]
    if shown:
        texts = [t for t, _ in shown][::-1]
        scores = [float(v) for _, v in shown][::-1]
        ax.barh(range(len(shown)), scores, color="#1F5FBF")
        ax.set_yticks(range(len(shown)))
        ax.set_yticklabels(texts, fontsize=9)
        lo, hi = min(scores), max(scores)
        pad = max(1e-3, 0.1 * (hi - lo))
        ax.set_xlim(lo - pad, hi + pad)
    ax.set_title(f"top {len(shown)} concepts (cosine)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def save_png(path: str | os.PathLike, image: np.ndarray, *, side: int | None = None) -> None:
    """Writes float [H, W, 3 or 4] in [0, 1] as an 8-bit PNG (RGBA keeps its alpha),
    resized to ``side`` x ``side`` when given (a page's thumbnail), atomically."""
    arr = (np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    im = Image.fromarray(arr)
    if side is not None and im.size != (side, side):
        im = im.resize((side, side), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())
