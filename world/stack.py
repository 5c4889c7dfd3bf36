"""The demo's per-classifier parts fitted in the world: MACO's magnitude template, and the
aligner and TopK SAE of each classifier (both cached under ``<out>/cache`` by config)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from texter_jax import aligner as aligner_io
from texter_jax import sae as sae_io
from texter_jax.aligner import Aligner
from texter_jax.batching import map_in_batches
from texter_jax.emphasis import default_spectrum, load_spectrum, save_spectrum
from texter_jax.emphasis.spectrum import spectrum_from_images
from texter_jax.eval.records import stable_hash
from texter_jax.sae import Sae, SaeConfig
from texter_jax.train.aligner import fit_aligner
from texter_jax.train.sae_train import SaeTrainConfig, evaluate_sae, train_sae
from texter_jax.world.attributes import WORLD_VERSION, sample_attributes
from texter_jax.world.demo_config import DemoConfig
from texter_jax.world.generator import render
from texter_jax.world.mosaics import DEFAULT_SHARED, render_mosaics, sample_mosaics
from texter_jax.world.views import DEFAULT_MIX, sample_views


class _Rows:
    """In-memory rows with the interface ``texter_jax.train.sae_train.train_sae`` reads."""

    def __init__(self, x: np.ndarray):
        self.x = np.asarray(x, np.float32)
        self.dim = self.x.shape[1]

    def __len__(self) -> int:
        return self.x.shape[0]

    def take(self, indices) -> np.ndarray:
        return self.x[np.asarray(indices)]


def world_magnitude(c: DemoConfig, cache: Path) -> tuple[np.ndarray, str]:
    """MACO's magnitude template [3, S, S // 2 + 1] for the demo's canvas, and its cache
    identity."""
    if c.spectrum == "power_law":
        return default_spectrum(c.canvas), "power_law"
    path = cache / f"spectrum_world{WORLD_VERSION}_{c.canvas}_{c.seed}.npy"
    if not path.is_file():
        # World renders at the canvas size, measured exactly as `texter spectrum`
        # measures a folder (the DC term replaced by the lowest-frequency ring).
        seed = c.seed + 5_000_011
        attrs = sample_attributes(seed, 64)
        renders = render(attrs, seed, image_size=c.canvas)
        save_spectrum(path, spectrum_from_images(renders, c.canvas))
    return load_spectrum(path), path.stem


def _mosaic_rows(c: DemoConfig) -> int:
    """Mosaics among the aligner's rows: as many as whole images. Measured on cached
    seed-0 / seed-1 world models (first 64 explained images, 2026-12-07): against a third
    as many, the value-canvas control rose for shape (0.85 -> 0.94, 0.56 -> 0.62) and
    badge (0.78 -> 0.84, 1.00 -> 1.00), the tiled-input control by 0.04 to 0.06 for
    shape and badge, Text-to-Concept's hit@3 moved by at most 0.07."""
    return c.feature_images


def world_stack(c: DemoConfig, cache: Path, name: str, clf, variables, clip, clip_vars,
                clf_identity: str, log: Callable[[str], None] = print
                ) -> tuple[Aligner, Sae, dict, str]:
    """The classifier's aligner (closed form, whole images, zoomed views and mosaics) and
    TopK SAE (release recipe on whole images, 10 % held out for its R^2).

    Returns:
      ``(aligner, sae, metrics, key)``; ``key`` identifies them in later caches.
    """
    seed = c.seed + 7_000_003
    key = stable_hash({"n": c.feature_images, "seed": seed, "size": c.image_size,
                       "exp": c.sae_expansion, "ep": c.sae_epochs, "bs": c.sae_batch,
                       "clf": clf_identity, "views": DEFAULT_MIX,
                       "mosaics": _mosaic_rows(c), "mosaic_shared": DEFAULT_SHARED})
    folder = cache / "stack" / name / key
    if (folder / "aligner" / "aligner.json").is_file() and \
            (folder / "sae_run" / "sae" / "sae.json").is_file():
        al = aligner_io.load(folder / "aligner")
        sae = sae_io.load_sae(folder / "sae_run")
        metrics = json.loads((folder / "metrics.json").read_text())
        log(f"[{name}] aligner and SAE loaded from {folder}")
        return al, sae, metrics, key
    # Whole images (SAE and aligner) and the same records through random views
    # (aligner only): the aligner must read close-ups as CLIP reads them.
    attrs = sample_attributes(seed, c.feature_images)
    whole = render(attrs, seed, image_size=c.image_size) / np.float32(255)
    views = sample_views(seed + 1, attrs, tuple((k, w) for k, w in DEFAULT_MIX
                                                 if k != "whole"))
    zoomed = render(attrs, seed + 1, image_size=c.image_size, views=views) / np.float32(255)
    # ... and mosaics (aligner only), as the crops of concept canvases look.
    mosaics = render_mosaics(sample_mosaics(seed + 2, _mosaic_rows(c), c.image_size),
                             seed + 2) / np.float32(255)
    feat = jax.jit(lambda x: clf.features(variables, x))
    emb = jax.jit(lambda x: clip.encode_image(clip_vars, x))
    z = map_in_batches(feat, whole)
    z_all = np.concatenate([z, map_in_batches(feat, zoomed), map_in_batches(feat, mosaics)])
    h_all = np.concatenate([map_in_batches(emb, whole), map_in_batches(emb, zoomed),
                            map_in_batches(emb, mosaics)])
    al = fit_aligner(z_all, h_all, key=jax.random.key(c.seed), method="closed_form")
    aligner_io.save(folder / "aligner", al, overwrite=True)
    d = z.shape[1]
    n_train = int(0.9 * len(z))  # the last 10 % are held out for the SAE's R^2
    sae_cfg = SaeConfig.release_default(d, expansion=c.sae_expansion)
    result = train_sae(_Rows(z[:n_train]), folder / "sae_run", sae_config=sae_cfg,
                       train_config=SaeTrainConfig(epochs=c.sae_epochs,
                                                   batch_size=c.sae_batch, seed=c.seed),
                       progress=False, verbose=False)
    sae_eval = evaluate_sae(result.params, z[n_train:], sae_cfg.top_k)
    metrics = {"aligner": {k: v for k, v in al.metrics.items()
                           if isinstance(v, (int, float))},
               "sae": {"input_dim": d, "nb_concepts": sae_cfg.nb_concepts,
                       "top_k": sae_cfg.top_k, "heldout_rows": len(z) - n_train,
                       **{k: float(v) for k, v in sae_eval.items()}},
               "feature_images": c.feature_images, "aligner_rows": len(z_all)}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log(f"[{name}] aligner holdout R2 {al.metrics.get('holdout_r2', float('nan')):.3f}"
        f", SAE {d}->{sae_cfg.nb_concepts} (k={sae_cfg.top_k})")
    return al, Sae(result.params, sae_cfg.top_k), metrics, key
