"""Where TEXTER loses its truth in stages 1-2, on a cached `texter demo` run.

For each world classifier (shape, shape_shortcut, colour, badge), on the first
``--images`` explained images of ``texter demo`` (same images, same per-image keys):

(a) per IG rank r = 1..6 (top-6 SAE codes by |IG|, as TEXTER selects them): MACO for
    that unit alone (a one-slot mask, the retries re-run that unit only), its stage-3
    crops read by the classifier; class consistency = share of crops labelled as the
    explained class (``reader_controls.class_consistency``); how many of the 6 units
    per image carry the class (consistency > 0.5);
(b) k_neu 3 / 6 / 12: hit@1, hit@3 (``hit_table``) and joint class consistency; k_neu 6
    is the demo's cached explanation (first rows), 3 and 12 run through
    ``Session.explain``; paired bootstrap CI of hit@1(k) - hit@1(6);
(c) TEXTER over SAE codes vs over features: the demo's results.json;
(d) share of the total |IG| mass held by the top 6 units, SAE codes and features.

The cached models are loaded as ``world/demo.py`` loads them; any training aborts.

  python bench/stage12_table.py --run-dir RUN --seed 0 --images 32 --out OUT/s0

where RUN is the ``--out`` folder of ``texter demo --seed 0 --explain-images 128``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import texter_jax.world.classifiers as wcls
import texter_jax.world.clip_train as wclip
import texter_jax.world.stack as wstack
from texter_jax import mapping
from texter_jax.batching import local_placement
from texter_jax.emphasis import MacoConfig, maco_batch_with_retry, sae_objective
from texter_jax.eval.metrics.hits import hit_rates, hit_table, mean_ci
from texter_jax.eval.records import stable_hash
from texter_jax.explain import ExplainConfig, fold_keys, image_keys
from texter_jax.programs import stage3_program
from texter_jax.sae import sae_encode
from texter_jax.session import Session
from texter_jax.stages import contributions, predict
from texter_jax.world.captions import concept_bank
from texter_jax.world.classifiers import ClassifierTrainConfig, get_or_train_classifiers
from texter_jax.world.clip_train import ClipTrainConfig, get_or_train_world_clip
from texter_jax.world.demo import explained_images
from texter_jax.world.demo_config import DemoConfig
from texter_jax.world.explain import explanation_path
from texter_jax.world.interventions import truth_values
from texter_jax.world.reader_controls import class_consistency
from texter_jax.world.stack import world_magnitude, world_stack

TOP = 6


def _refuse(*_a, **_k):
    raise SystemExit("a cached model is missing or stale: training refused")


for _mod, _fn in ((wcls, "train_all"), (wclip, "train_world_clip"),
                  (wstack, "fit_aligner"), (wstack, "train_sae")):
    setattr(_mod, _fn, _refuse)  # this bench only reads the demo's cache


_predict = jax.jit(predict, static_argnums=0)
_contributions = jax.jit(contributions, static_argnums=0,
                         static_argnames=("steps", "method", "ranked", "ranking"))


def stage1(clf, variables, images, sae, cfg):
    """Prediction and stage 1's Contributions (IG over SAE codes, or features if sae None)."""
    pred = _predict(clf, variables, jnp.asarray(images))
    return pred, jax.device_get(_contributions(
        clf, variables, pred.z, pred.label, sae, steps=cfg.ig_steps, method=cfg.ig_method,
        ranked=cfg.ranked_units, ranking=cfg.unit_ranking))


def batched(fn, batch, *arrays):
    """``fn`` on rows [s, s + batch) of ``arrays``, outputs concatenated (the demo's
    batching: IG's chunking follows the batch)."""
    n = len(arrays[0])
    outs = [fn(*(a[s:s + batch] for a in arrays)) for s in range(0, n, batch)]
    return jax.tree.map(lambda *x: np.concatenate([np.asarray(v) for v in x]), *outs)


def top_mass(contrib) -> np.ndarray:
    """Per image: |IG| of the top-6 ranked units over the total |IG|."""
    a = np.abs(np.asarray(contrib.scores))
    ids = np.asarray(contrib.ranked_ids)[:, :TOP]
    top = np.where(ids >= 0, np.take_along_axis(a, np.maximum(ids, 0), 1), 0).sum(1)
    return top / np.maximum(a.sum(1), 1e-30)


def single_unit(session, cfg, keys, ids, *, magnitude, text_emb):
    """MACO for one unit per image, read by stage 3: (crop labels [B, C], scores [B, T],
    failed [B])."""
    clf, sae, placement = session.classifier, session.sae, local_placement()
    width = cfg.ranked_units
    uid = np.zeros((len(ids), width), np.int32)
    uid[:, 0] = np.maximum(ids, 0)
    mask = np.zeros((len(ids), width), bool)
    mask[:, 0] = True  # invalid rows (no such unit) are dropped by the caller
    objective = sae_objective(clf, session.variables, sae_encode, sae.params, top_k=sae.top_k)
    res, info = maco_batch_with_retry(objective, fold_keys(keys, "maco"),
                                      jnp.asarray(magnitude, jnp.float32), cfg.maco, uid, 1,
                                      mask, max_retries=cfg.max_retries, placement=placement)
    emb, logits = stage3_program(placement)(
        session.variables, session.aligner.bare(), fold_keys(keys, "crops"), res.image,
        res.transparency, classifier=clf, n_crops=cfg.map_crops, whole=cfg.map_whole_canvas)
    scores = np.asarray(mapping.retrieve(emb, jnp.asarray(text_emb)))
    return np.argmax(np.asarray(logits), -1), scores, info.failed


def rankings(scores, phrases):
    return [[phrases[j] for j in row] for row in np.argsort(-scores, axis=1, kind="stable")]


def quart(x):
    q = np.percentile(x, [25, 50, 75])
    return {"mean": float(np.mean(x)), "q25": float(q[0]), "median": float(q[1]),
            "q75": float(q[2]), "n": int(len(x))}


def run(args) -> dict:
    run_dir, seed, n = Path(args.run_dir), args.seed, args.images
    c = DemoConfig(out=str(run_dir), seed=seed, explain_images=128, progress=False)
    cache = run_dir / "cache"
    clip, clip_vars, _ = get_or_train_world_clip(
        cache, ClipTrainConfig(image_size=c.image_size, steps=c.clip_steps, seed=seed))
    classifiers = get_or_train_classifiers(cache, ClassifierTrainConfig(
        image_size=c.image_size, train_images=c.train_images, seed=seed))
    clip_vars = jax.tree.map(jnp.asarray, clip_vars)
    phrases, meaning = concept_bank()
    text_emb = np.asarray(clip.encode_text(clip_vars, clip.tokenize(phrases)))
    magnitude, spectrum_id = world_magnitude(c, cache)
    ex_attrs, ex_images = explained_images(c)
    images, keys = ex_images[:n], image_keys(seed, range(n))
    demo = json.loads((run_dir / "results.json").read_text())
    out = {"run_dir": str(run_dir), "seed": seed, "images": n, "classifiers": {}}
    for name, (clf, variables, info) in classifiers.items():
        t0 = time.perf_counter()
        variables = jax.tree.map(jnp.asarray, variables)
        ident = stable_hash({"name": name, "train": info.get("train_config"),
                             "task": info.get("task")})
        aligner, sae, _, stack_key = world_stack(c, cache, name, clf, variables, clip,
                                                 clip_vars, ident)
        session = Session(clf, variables, clip, clip_vars, aligner, sae)
        truths = truth_values(info["critical"], ex_attrs)[:n]
        maco = MacoConfig(canvas=c.canvas, steps=c.maco_steps, n_crops=c.maco_crops,
                          crop_size=clf.image_size)
        cfg = ExplainConfig.preset(c.preset, k_neu=c.k_neu, ig_steps=c.ig_steps, maco=maco,
                                   map_crops=c.map_crops, use_sae=True)
        cached = dict(np.load(explanation_path(c, cache, name, "texter", 128, stack_key,
                                               spectrum_id)))
        ig = functools.partial(stage1, clf, variables, cfg=cfg)
        pred, sae_c = batched(functools.partial(ig, sae=sae), c.batch_size, images)
        mass_images = ex_images[:args.mass_images]
        _, feat_c = batched(functools.partial(ig, sae=None), c.batch_size, mass_images)
        _, sae_m = batched(functools.partial(ig, sae=sae), c.batch_size, mass_images)
        label = np.asarray(pred.label)
        ids = np.asarray(sae_c.ranked_ids)
        same = bool(np.array_equal(ids[:, :TOP], cached["unit_ids"][:n, :TOP])
                    and np.array_equal(label, cached["label"][:n]))
        rec = {"critical": info["critical"], "stage1_matches_demo": same}
        # (a) each selected unit alone
        cons = np.full((n, TOP), np.nan)
        unit_hit = {k: np.full((n, TOP), np.nan) for k in (1, 3)}
        failed = np.zeros((n, TOP), bool)
        for r in range(TOP):
            valid = np.asarray(sae_c.ranked_valid)[:, r]
            cl, sc, fl = batched(functools.partial(single_unit, session, cfg,
                                                   magnitude=magnitude, text_emb=text_emb),
                                 c.batch_size, keys, ids[:, r])
            per = np.mean(cl == label[:, None], axis=1)
            h = hit_rates(rankings(sc, phrases), truths, meaning, (1, 3))
            cons[valid, r], failed[:, r] = per[valid], fl
            for k in (1, 3):
                unit_hit[k][valid, r] = h[f"hit@{k}"][valid]
            print(f"[{name}] unit rank {r + 1}: consistency {np.nanmean(cons[:, r]):.3f}",
                  flush=True)
        carriers = np.sum(cons > 0.5, axis=1)
        ok = ~np.isnan(cons)
        rec["per_rank"] = [{"rank": r + 1, **mean_ci(cons[ok[:, r], r], seed=seed),
                            "carries": float(np.mean(cons[ok[:, r], r] > 0.5)),
                            **{f"hit@{k}": mean_ci(unit_hit[k][ok[:, r], r], seed=seed)
                               for k in (1, 3)},
                            "failed": int(failed[:, r].sum())} for r in range(TOP)]
        rec["carriers_per_image"] = {"mean": float(carriers.mean()),
                                     "hist": np.bincount(carriers, minlength=TOP + 1).tolist()}
        # (b) k_neu 3 / 6 / 12
        hits1, rec["k_neu"] = {}, {}
        for k in (3, 6, 12):
            if k == c.k_neu:
                lab, cl, sc = cached["label"][:n], cached["crop_labels"][:n], \
                    cached["scores"][:n]
            else:
                e = session.explain(images, keys, dataclasses.replace(cfg, k_neu=k),
                                    text_emb=text_emb, magnitude=magnitude,
                                    batch_size=c.batch_size)
                lab, cl, sc = e.label, e.crop_labels, e.concept_scores
            rk = rankings(sc, phrases)
            hits1[k] = hit_rates(rk, truths, meaning, (1,))["hit@1"].astype(np.float32)
            rec["k_neu"][k] = {**hit_table(rk, truths, meaning, ks=(1, 3), seed=seed),
                               "class_consistency": class_consistency(cl, lab, seed=seed)}
            print(f"[{name}] k_neu {k}: hit@1 {hits1[k].mean():.3f}", flush=True)
        for k in (3, 12):
            rec["k_neu"][k]["hit@1 - k6"] = mean_ci(hits1[k] - hits1[6], seed=seed)
        first = rec["per_rank"][0]  # k_neu 1: the rank-1 unit alone, from (a)
        rec["k_neu"]["1 (rank-1 unit alone)"] = {
            "hit@1": first["hit@1"], "hit@3": first["hit@3"],
            "class_consistency": {k: first[k] for k in ("rate", "low", "high", "n")},
            "hit@1 - k6": mean_ci(unit_hit[1][ok[:, 0], 0] - hits1[6][ok[:, 0]], seed=seed)}
        # (c) and (d)
        rec["demo"] = {m: {"hits": demo["hits"][name][m],
                           "class_consistency": demo["class_consistency"][name][m]}
                       for m in ("texter", "texter-nosae", "texter-logit")}
        rec["top6_mass"] = {"sae": quart(top_mass(sae_m)), "features": quart(top_mass(feat_c))}
        rec["seconds"] = time.perf_counter() - t0
        out["classifiers"][name] = rec
        print(f"[{name}] done in {rec['seconds']:.0f} s", flush=True)
    return out


def _ci(d, f="{:.2f}"):
    return f"{f.format(d['rate'])} [{f.format(d['low'])}, {f.format(d['high'])}]"


def markdown(res) -> str:
    cl = res["classifiers"]
    lines = [f"# Stage 1-2 table: {res['run_dir']} (seed {res['seed']}, n = {res['images']})",
             "", "## (a) class consistency of each selected unit's own concept image", "",
             "| classifier | " + " | ".join(f"rank {r}" for r in range(1, TOP + 1))
             + " | units > 0.5 per image (mean) |", "|---" * (TOP + 2) + "|"]
    for name, r in cl.items():
        cells = [f"{_ci(p)} (n {p['n']}, {p['carries']:.0%} > 0.5)" for p in r["per_rank"]]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {r['carriers_per_image']['mean']:.2f} |")
    lines += ["", "## (a2) hit@1 / hit@3 of each selected unit's own concept image", "",
              "| classifier | " + " | ".join(f"rank {r}" for r in range(1, TOP + 1)) + " |",
              "|---" * (TOP + 1) + "|"]
    for name, r in cl.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{p['hit@1']['rate']:.2f} / {p['hit@3']['rate']:.2f}" for p in r["per_rank"])
            + " |")
    lines += ["", "## (b) k_neu (joint concept image)", "",
              "| classifier | k_neu | hit@1 | hit@3 | class consistency | hit@1 - k6 |",
              "|---|---|---|---|---|---|"]
    for name, r in cl.items():
        for k, v in r["k_neu"].items():
            d = _ci(v["hit@1 - k6"]) if "hit@1 - k6" in v else "-"
            lines.append(f"| {name} | {k} | {_ci(v['hit@1'])} | {_ci(v['hit@3'])} | "
                         f"{_ci(v['class_consistency'])} | {d} |")
    lines += ["", "## (c) demo results.json (n = 128)", "",
              "| classifier | method | hit@1 | hit@3 | class consistency |",
              "|---|---|---|---|---|"]
    for name, r in cl.items():
        for m, v in r["demo"].items():
            lines.append(f"| {name} | {m} | {_ci(v['hits']['hit@1'])} | "
                         f"{_ci(v['hits']['hit@3'])} | {_ci(v['class_consistency'])} |")
    lines += ["", "## (d) share of total |IG| in the top 6 units", "",
              "| classifier | over | mean | q25 | median | q75 | n |",
              "|---|---|---|---|---|---|---|"]
    for name, r in cl.items():
        for over, q in r["top6_mass"].items():
            lines.append(f"| {name} | {over} | {q['mean']:.3f} | {q['q25']:.3f} | "
                         f"{q['median']:.3f} | {q['q75']:.3f} | {q['n']} |")
    lines += ["", "stage 1 matches the demo's cached units: "
              + ", ".join(f"{k} {v['stage1_matches_demo']}" for k, v in cl.items()), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True, help="a demo run folder (with cache/)")
    p.add_argument("--seed", type=int, required=True, help="the demo run's seed")
    p.add_argument("--images", type=int, default=32, help="explained images (first n)")
    p.add_argument("--mass-images", type=int, default=128, help="images for (d)")
    p.add_argument("--out", required=True, help="output stem: <out>.json and <out>.md")
    args = p.parse_args(argv)
    t = time.perf_counter()
    res = run(args)
    res["seconds"] = time.perf_counter() - t
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
