"""Cascading model randomisation (Adebayo et al. 2018) of TEXTER stages 1-2 on a REAL classifier.

Classifier: EfficientNet-Lite0 with its shipped ImageNet weights, converted to Flax
(``tests/real_weights.py``); photos from ``skimage.data``. Levels, top-down and
cumulative: original; head (``fc``); + ``head_conv``/``head_bn``; + block15; + block14; ...
(``--levels`` randomised levels). Re-drawing is ``texter_jax.eval.sanity``'s: each tensor Gaussian
with its own mean/std, BatchNorm statistics kept; the head is found by
``sanity.head_paths``, each next block by ``sanity.last_block_prefix`` (excluding what is
already re-drawn), and each level re-draws only its new tensors (key ``fold_in(2018,
level)``) on top of the previous level, so earlier draws stay fixed.

Per level and photo (class = the ORIGINAL model's prediction, kept fixed):
* stage 1: IG over the 1280 features (library ``ig_features``: baseline 0, 100
  Gauss-Legendre nodes) under that level's network; top-6 by |attr| (``top_units``).
  Measures vs the original level: top-6 overlap, Spearman of |IG| over all 1280 units
  (and over the units with non-zero IG in either, since ReLU6 zeros tie).
* stage 2: MACO (library ``maco_batch_with_retry`` on ``features_objective``, as the
  ``use_sae=False`` path of ``explain.py``: top-6 of 16 ranked units, one more unit and a
  fresh key ``fold_in(key, attempt)`` while the transparency map is all zero, as the
  release; power-law template; same key at every level) under that level's network. The
  concept image is compared with the original level's by measures read through the
  ORIGINAL network, independent of the MACO seed:
  - feature profile: features averaged over 32 MACO-style random crops (centre
    N(0.5, 0.15), side U[0.25, 0.30], no noise; the same boxes for every image) resized
    to 224; Spearman of the two 1280-d profiles;
  - the original top-6 units' summed activation in that profile (the original stage-2
    objective, read on this image);
  - Spearman of the transparency maps (channel mean, block-averaged to 32x32), raw and
    per crop visit (divided by the replayed crop coverage of the run, cells covered in
    both), since with the same key every level places its crops identically.
* MACO-seed floor: original network and units, MACO keys seed+1 and seed+2, the same
  measures vs the seed-0 concept image: what mere seed noise does.

Writes OUT/cascade.json, OUT/cascade.md and OUT/cascade.png (rows: photos; columns: the
photo, then the concept image of each level and of the floor seeds). One core: 26 min at
the defaults (``--steps 128 --crops 6``: 9 MACO runs of both photos, ~165 s each). Command::

    taskset -c 0 .venv/bin/python bench/real_weights_cascade.py [--photos chelsea,coffee] \\
        [--steps 128] [--canvas 640] [--crops 6] [--seed 0] [--levels 6] [--out docs/real_weights]
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

K, RANKED, MAX_RETRIES = 6, 16, 8  # explain.py's defaults (k_neu, ranked_units, max_retries)
PROFILE_CROPS, GRID, REDRAW_SEED, PROFILE_SEED = 32, 32, 2018, 7


def cascade(clf, variables, n_levels):
    """[(name, variables, new paths)]: original, then cumulative re-draws, top-down."""
    import jax

    from texter_jax.eval import sanity
    params = variables["params"]
    all_paths = sorted(sanity._path_str(p)  # private helper there: "a/b/c" leaf paths
                       for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])
    groups = [("head", sanity.head_paths(clf, variables)),
              ("+head_conv", {p for p in all_paths if p.split("/")[0] in ("head_conv", "head_bn")})]
    done = set().union(*(g for _, g in groups))
    while len(groups) < n_levels:
        prefix = sanity.last_block_prefix(params, done)
        if prefix is None:
            break
        new = {p for p in all_paths if p.startswith(prefix + "/")}
        groups.append((f"+{prefix}", new))
        done |= new
    out = [("original", variables, [])]
    for i, (name, paths) in enumerate(groups[:n_levels], start=1):
        chosen = sanity.select(params, paths.__contains__)
        key = jax.random.fold_in(jax.random.key(REDRAW_SEED), i)
        out.append((name, sanity.randomize(key, out[-1][1], chosen), sorted(paths)))
    return out


def rho(a, b, mask=None) -> float:
    import jax.numpy as jnp

    from texter_jax.eval.metrics import spearman
    a, b = np.asarray(a, np.float32).ravel()[None], np.asarray(b, np.float32).ravel()[None]
    m = None if mask is None else jnp.asarray(np.asarray(mask).ravel()[None])
    r = float(spearman(jnp.asarray(a), jnp.asarray(b), m)[0])
    return None if np.isnan(r) else round(r, 4)


def grid(x: np.ndarray) -> np.ndarray:
    """[S, S(, C)] -> [GRID, GRID] block means (channel mean first)."""
    x = x.mean(-1) if x.ndim == 3 else x
    b = x.shape[0] // GRID
    return x[:b * GRID, :b * GRID].reshape(GRID, b, GRID, b).mean((1, 3))


def coverage(key, cfg) -> np.ndarray:
    """How many MACO crops covered each canvas pixel: the boxes of ``loop.render_batch``
    replayed (split -> fold_in(step) -> split -> sample_boxes), [S, S]."""
    import jax

    from texter_jax.emphasis.crops import sample_boxes
    k_loop = jax.random.split(key)[1]
    boxes = np.asarray(jax.vmap(lambda t: sample_boxes(
        jax.random.split(jax.random.fold_in(k_loop, t))[0], cfg.n_crops,
        centre_std=cfg.centre_std, side_range=cfg.side_range, clip=cfg.clip_boxes))(
        np.arange(cfg.steps))).reshape(-1, 3) * cfg.canvas
    cov = np.zeros((cfg.canvas + 1, cfg.canvas + 1))
    for cy, cx, s in boxes:  # 2-D difference array
        y0, x0 = (int(np.clip(np.floor(c - s / 2), 0, cfg.canvas)) for c in (cy, cx))
        y1, x1 = (int(np.clip(np.ceil(c + s / 2), 0, cfg.canvas)) for c in (cy, cx))
        cov[y0, x0] += 1
        cov[y1, x0] -= 1
        cov[y0, x1] -= 1
        cov[y1, x1] += 1
    return cov.cumsum(0).cumsum(1)[:-1, :-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default="chelsea,coffee")
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--canvas", type=int, default=640)
    ap.add_argument("--crops", type=int, default=6, help="MACO crops per step (release: 6)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", type=int, default=6, help="randomised levels after the original")
    ap.add_argument("--out", default="docs/real_weights")
    args = ap.parse_args()
    t_start = time.perf_counter()
    import jax
    import jax.numpy as jnp
    import real_weights as rw

    from texter_jax.contributions import ig_features, top_units
    from texter_jax.emphasis import (
        MacoConfig,
        default_spectrum,
        features_objective,
        maco_batch_with_retry,
    )
    from texter_jax.emphasis.crops import crop_and_resize, sample_boxes
    from texter_jax.mapping import normalize_concept_image

    photos = args.photos.split(",")
    clf, var0 = rw.flax_lite0()
    classes = rw.imagenet_classes()
    x = jnp.asarray(np.stack([rw.photo(p) for p in photos]))
    cfg = MacoConfig(canvas=args.canvas, steps=args.steps, n_crops=args.crops,
                     crop_size=clf.image_size)
    mag = default_spectrum(args.canvas)
    def keys_for(s):
        return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(s), i))(
            jnp.arange(len(photos), dtype=jnp.uint32))
    boxes = sample_boxes(jax.random.key(PROFILE_SEED), PROFILE_CROPS)

    @jax.jit
    def stage1(v, x, c):
        z = clf.features(v, x)
        logits = clf.head(v, z)
        ig = ig_features(functools.partial(clf.head, v), z, c, steps=100)
        return ig, top_units(ig, RANKED)[0], jnp.argmax(logits, -1), jax.nn.softmax(logits)

    @jax.jit
    def profile(image):  # one canvas -> original network's mean features over the crops
        return jnp.mean(clf.features(var0, crop_and_resize(image, boxes, 224, max_side=0.30)), 0)

    levels = cascade(clf, var0, args.levels)
    ig0, ranked0, label, probs0 = stage1(var0, x, jnp.zeros(len(photos), jnp.int32))
    ig0, ranked0, label, probs0 = stage1(var0, x, label)  # class fixed from here on
    label, ig0, ranked0 = np.asarray(label), np.asarray(ig0), np.asarray(ranked0)
    units0 = ranked0[:, :K]

    def render(v, ranked, seed):
        """explain.py's stage 2: top-K of the ranked units, one more on an all-zero map."""
        t = time.perf_counter()
        keys = keys_for(seed)
        r, info = maco_batch_with_retry(features_objective(clf, v), keys, mag, cfg, ranked, K,
                                        max_retries=MAX_RETRIES)
        img, tr = np.asarray(r.image), np.asarray(r.transparency)
        cov = [coverage(jax.random.fold_in(k, int(n)) if n else k, cfg)
               # the retry's key is fold_in(key, attempt)
               for k, n in zip(keys, info.retries, strict=True)]
        prof = np.stack([np.asarray(profile(jnp.asarray(i))) for i in img])
        return dict(img=img, tr=tr, cov=cov, prof=prof, obj=np.asarray(r.objective_trace)[:, -1],
                    n_units=info.n_units.tolist(), retries=info.retries.tolist(),
                    failed=info.failed.tolist(), seconds=time.perf_counter() - t)

    runs, rows = [], {p: [] for p in photos}
    for name, v, paths in levels:
        t = time.perf_counter()
        ig, ranked, pred, probs = (np.asarray(a) for a in stage1(v, x, jnp.asarray(label)))
        t_ig = time.perf_counter() - t
        runs.append((name, 0, render(v, ranked, args.seed)))
        print(f"[{time.perf_counter() - t_start:.0f}s] level {name}: {len(paths)} tensors "
              f"re-drawn, MACO {runs[-1][2]['seconds']:.0f}s", flush=True)
        for b, p in enumerate(photos):
            live = (ig[b] != 0) | (ig0[b] != 0)
            rows[p].append(dict(level=name, redrawn_tensors=len(paths),
                                units=ranked[b, :K].tolist(),
                                top1=classes[int(pred[b])], prob_of_class=float(probs[b, label[b]]),
                                top6_overlap=len(set(ranked[b, :K]) & set(units0[b])),
                                spearman_abs_ig=rho(np.abs(ig[b]), np.abs(ig0[b])),
                                spearman_abs_ig_nonzero=rho(np.abs(ig[b]), np.abs(ig0[b]), live),
                                nonzero_ig_units=int((ig[b] != 0).sum()),
                                ig_seconds=round(t_ig, 2)))
    for s in (1, 2):
        runs.append((f"floor seed {args.seed + s}", s, render(var0, ranked0, args.seed + s)))
        print(f"[{time.perf_counter() - t_start:.0f}s] floor seed {args.seed + s}", flush=True)

    ref, floor = runs[0][2], {p: [] for p in photos}
    for name, s, r in runs:
        for b, p in enumerate(photos):
            g_ref, g_own = grid(ref["tr"][b]), grid(r["tr"][b])
            c_ref, c_own = grid(ref["cov"][b]), grid(r["cov"][b])
            both = (c_ref > 0) & (c_own > 0)
            def per_visit(g, c, both=both):
                return np.where(both, g / np.maximum(c, 1e-9), 0)
            m = dict(maco_units=r["n_units"][b], maco_retries=r["retries"][b],
                     maco_failed=r["failed"][b],
                     maco_final_objective=round(float(r["obj"][b]), 4),
                     profile_spearman=rho(r["prof"][b], ref["prof"][b]),
                     orig_units_activation=round(float(r["prof"][b][units0[b]].sum()), 4),
                     transparency_spearman=rho(g_own, g_ref),
                     transparency_per_visit_spearman=rho(per_visit(g_own, c_own),
                                                         per_visit(g_ref, c_ref), both),
                     transparency_vs_coverage_spearman=rho(g_own, c_own),
                     transparency_mass_outside_crops=round(float(
                         r["tr"][b].sum(-1)[r["cov"][b] == 0].sum()
                         / max(r["tr"][b].sum(), 1e-30)), 6),
                     maco_seconds=round(r["seconds"] / len(photos), 1))
            (floor[p].append(dict(level=name, **m)) if s else
             rows[p][[q["level"] for q in rows[p]].index(name)].update(m))

    os.makedirs(args.out, exist_ok=True)
    photo_acts = np.asarray(clf.features(var0, x))
    result = dict(
        what="cascading model randomisation of TEXTER stages 1-2, EfficientNet-Lite0 (real "
             "ImageNet weights), features path (no SAE)",
        command=f"[cpus {','.join(map(str, sorted(os.sched_getaffinity(0))))}] python "
        + " ".join(sys.argv),
        settings=dict(vars(args), ig_steps=100, ig_method="gausslegendre", k=K,
                      profile_crops=PROFILE_CROPS, grid=GRID, redraw_seed=REDRAW_SEED,
                      maco=dict(lr=cfg.learning_rate, noise=cfg.noise, side=cfg.side_range,
                                template="power law (default_spectrum)")),
        levels=[dict(level=n, redrawn=sorted({q.rsplit("/", 1)[0] for q in pth}))
                for n, _, pth in levels],
        photos={p: dict(label=int(label[b]), class_name=classes[int(label[b])],
                        prob=float(np.asarray(probs0)[b, label[b]]), units=units0[b].tolist(),
                        orig_units_activation_on_photo=round(
                            float(photo_acts[b][units0[b]].sum()), 4),
                        levels=rows[p], maco_seed_floor=floor[p]) for b, p in enumerate(photos)},
        seconds=round(time.perf_counter() - t_start, 1))
    Path(args.out, "cascade.json").write_text(json.dumps(result, indent=1))
    write_md(Path(args.out, "cascade.md"), result)
    write_png(Path(args.out, "cascade.png"), photos, x, runs, normalize_concept_image)
    print(f"done in {result['seconds']:.0f}s -> {args.out}/cascade.{{json,md,png}}", flush=True)


def write_md(path, res) -> None:
    def f(v):
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
    s = res["settings"]
    out = ["# Cascading model randomisation: EfficientNet-Lite0 (real weights)\n",
           f"`{res['command']}`: {res['seconds']:.0f} s. MACO {s['steps']} steps, canvas "
           f"{s['canvas']}, {s['crops']} crops/step; IG 100 Gauss-Legendre nodes; top-{s['k']}. "
           "Class fixed to the original prediction. Concept-image measures are read through "
           f"the ORIGINAL network on {s['profile_crops']} fixed crops; transparency maps at "
           f"{s['grid']}x{s['grid']} (raw / per crop visit). `act` = summed activation of the "
           "original top-6 units on the concept image (on the photo: in each heading). Floor "
           "rows: the original network and units with other MACO seeds. Non-zero abs-IG "
           "Spearman: over the union of the two supports. Last column: MACO's score at its last "
           f"step ({s['crops']} noisy crop(s), that level's network and units).\n"]
    for p, d in res["photos"].items():
        out += [f"\n## {p}: {d['class_name']} (p={d['prob']:.3f}), units {d['units']}, "
                f"act on the photo {d['orig_units_activation_on_photo']:.3f}\n",
                "| level | top-1 of that net | top-6 overlap | Spearman abs IG (all / non-zero) | "
                "MACO units (retries) | feature-profile Spearman | transparency Spearman (raw / "
                "per visit) | act | MACO score, last step |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in d["levels"] + d["maco_seed_floor"]:
            out.append(f"| {r['level']} | {r.get('top1', '(orig)')} | "
                       f"{r.get('top6_overlap', '6')} | {f(r.get('spearman_abs_ig', 1.0))} / "
                       f"{f(r.get('spearman_abs_ig_nonzero', 1.0))} | "
                       f"{r['maco_units']} ({r['maco_retries']}"
                       f"{', FAILED' if r['maco_failed'] else ''}) | "
                       f"{f(r['profile_spearman'])} | {f(r['transparency_spearman'])} / "
                       f"{f(r['transparency_per_visit_spearman'])} | "
                       f"{f(r['orig_units_activation'])} | "
                       f"{f(r['maco_final_objective'])} |")
    path.write_text("\n".join(out) + "\n")


def write_png(path, photos, x, runs, normalize) -> None:
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from PIL import Image
    cols = len(runs) + 1
    fig, axes = plt.subplots(len(photos), cols, figsize=(1.5 * cols, 1.65 * len(photos)),
                             squeeze=False)
    for b, p in enumerate(photos):
        axes[b, 0].imshow(np.asarray(x[b]))
        axes[b, 0].set_title(p, fontsize=7)
        for j, (name, _, r) in enumerate(runs, start=1):
            img = np.asarray(normalize(r["img"][b]))
            small = Image.fromarray((img * 255).astype(np.uint8)).resize((160, 160), Image.LANCZOS)
            axes[b, j].imshow(small)
            axes[b, j].set_title(name, fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout(pad=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110)
    plt.close(fig)
    buf.seek(0)  # noise-like images compress badly: a 256-colour palette keeps it < 600 KB
    Image.open(buf).convert("RGB").quantize(256).save(path, optimize=True)


if __name__ == "__main__":
    main()
