"""Plumbing of ``texter eval``: sample an image folder, explain with every method, score.

Loads the models, aligner, SAE, concept banks and text-embedding cache through
``texter explain``'s loader (:class:`apps.explain_runner.ExplainRun`); the maths
lives in :mod:`eval.metrics` and the explanation producers in :mod:`eval.pipeline`.
Writes into ``--out``:

* ``records.jsonl``: one line per (image, method), appended and flushed as computed;
  a re-run skips the pairs already there (resume) and tolerates a truncated last line;
* ``summary.md`` / ``summary.csv``: means and bootstrap CIs per method, subset, metric;
* ``curves.png`` / ``distributions.png``;
* ``run.json``: settings, skipped images, sanity randomisations, timings;
* ``cache/``: concept-image artefacts (.npz) so re-scoring never re-runs MACO.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from eval.data import EvalDataError, EvalImage
from eval.records import (ArtifactCache, RecordStore, gather_parts, part_path,
                          stable_hash)
from texter_jax.batching import pad_rows
from texter_jax.io.atomic import write_json_atomic

RECORD_FORMAT = "texter_jax/eval-record/v1"
METHODS = ("texter", "texter-nosae", "text2concept", "random")
SANITY = ("head", "top", "units", "seed")
# concepts kept per record (the full ranking is recomputable from the cache)
RECORD_TOP = 10


class EvalSetupError(ValueError):
    """Arguments, models or data do not fit; the message says which."""


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One evaluated method: ``label`` in tables, ``base`` in :data:`METHODS`."""

    label: str
    base: str
    config: Any  # ExplainConfig for TEXTER methods, else None
    params: dict


def _int_list(text: str | int | None, name: str) -> list[int]:
    if text is None:
        return []
    if isinstance(text, int):
        return [text]
    try:
        vals = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise EvalSetupError(f"--{name} takes comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise EvalSetupError(f"--{name} needs positive integers, got {text!r}")
    return vals


def method_specs(args, image_size: int) -> list[MethodSpec]:
    """Methods x ablations from the flags (TEXTER methods get every k_neu x steps x
    canvas combination; a parameter appears in the label when it takes >1 value)."""
    from texter_jax.emphasis import MacoConfig
    from texter_jax.explain import ExplainConfig

    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise EvalSetupError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    from texter_jax.explain import PRESETS

    presets = [p.strip() for p in str(getattr(args, "preset", "release")).split(",")
               if p.strip()]
    if not presets or set(presets) - set(PRESETS):
        raise EvalSetupError(f"unknown preset(s) in {args.preset!r}; choose from "
                             f"{', '.join(PRESETS)}")
    grid = {"k_neu": _int_list(args.k_neu, "k-neu"), "steps": _int_list(args.steps, "steps"),
            "canvas": _int_list(args.canvas, "canvas"), "preset": list(dict.fromkeys(presets))}
    varying = [k for k, v in grid.items() if len(v) > 1]
    specs = []
    for base in dict.fromkeys(names):
        if base in ("text2concept", "random"):
            specs.append(MethodSpec(base, base, None, {}))
            continue
        for k, s, c, pre in itertools.product(*grid.values()):
            maco = MacoConfig(canvas=c, steps=s, n_crops=args.crops, crop_size=image_size)
            try:
                cfg = ExplainConfig.preset(pre, k_neu=k, ig_steps=args.ig_steps,
                                           use_sae=base == "texter", ranked_units=max(16, k),
                                           maco=maco, map_crops=args.map_crops,
                                           compute_dtype="bfloat16" if args.bf16 else None)
            except ValueError as e:
                raise EvalSetupError(f"--preset {pre} with --steps {s}: {e}") from e
            params = {"k_neu": k, "steps": s, "canvas": c, "preset": pre}
            label = base if not varying else base + "[" + ",".join(
                f"{v}={params[v]}" for v in varying) + "]"
            specs.append(MethodSpec(label, base, cfg, params))
    return specs


def _config_dict(cfg) -> dict:
    if cfg is None:
        return {}
    d = dataclasses.asdict(cfg)
    if cfg.maco.stop_rtol is None:  # no stopping rule: hashes as before the rule existed
        for k in ("stop_rtol", "stop_window", "stop_min_steps"):
            d["maco"].pop(k)
    return d


# ---------------------------------------------------------------------------------
# Jitted batch functions (built once; batches are padded to a fixed size).


@functools.cache
def _jitted():
    """The runner's jitted batch functions, built once per process (so repeated runs in
    one process, e.g. tests, reuse the compiled programs)."""
    import jax
    import jax.numpy as jnp

    from eval.metrics import (clip_scores, curve_auc, deletion_curve, directional_derivatives,
                              feature_directions, insertion_curve, spearman)
    from texter_jax.explain import predict

    @functools.partial(jax.jit, static_argnames=("classifier",))
    def predict_fn(classifier, variables, images):
        return predict(classifier, variables, images)

    @functools.partial(jax.jit, static_argnames=("clip",))
    def clip_image_fn(clip, variables, images):
        return clip.encode_image(variables, images)

    @functools.partial(jax.jit, static_argnames=("classifier",))
    def metric_fn(classifier, variables, pullback, z, cls, clip_img, top_emb, mask, center,
                  baseline):
        head = functools.partial(classifier.head, variables)
        top1, topk = clip_scores(clip_img, top_emb, mask)
        dirs = feature_directions(pullback, top_emb, center[:, None, :])
        dirs = jnp.where(mask[..., None], dirs, 0.0)
        deriv, cos = directional_derivatives(head, z, cls, dirs)
        m = mask.astype(jnp.float32)
        nk = jnp.maximum(m.sum(axis=1), 1.0)
        ins = insertion_curve(head, z, cls, dirs, baseline, mask)
        dele = deletion_curve(head, z, cls, dirs, baseline, mask)
        return {"clip_top1": top1, "clip_topk": topk,
                "directional_top1": deriv[:, 0],
                "directional_topk": jnp.sum(deriv * m, axis=1) / nk,
                "directional_cos_top1": cos[:, 0],
                "directional_cos_topk": jnp.sum(cos * m, axis=1) / nk,
                "insertion_auc": curve_auc(ins), "deletion_auc": curve_auc(dele),
                "insertion_curve": ins, "deletion_curve": dele}

    return SimpleNamespace(predict=predict_fn, clip_image=clip_image_fn, metrics=metric_fn,
                           spearman=jax.jit(spearman))


class EvalRun:
    """One ``texter eval`` invocation (see :mod:`eval.cli` for the flags)."""

    def __init__(self, args, group=None):
        from texter_jax.distributed import SINGLE

        self.args = args
        self.group = group or SINGLE  # several processes: each explains its share
        self.skipped: dict[str, str] = {}
        self.timing: dict[str, list[float]] = {}

    # -- set-up -------------------------------------------------------------------

    def _setup(self) -> None:
        import jax

        from eval.data import (folder_labels, list_image_folder, load_truth,
                               read_class_index, sample)
        from eval.metrics import aligner_pullback
        from eval.sanity import randomized_variables
        from texter_jax.emphasis import default_spectrum
        from apps.explain_runner import ExplainRun, ExplainSetupError
        from texter_jax.text_cache import checkpoint_identity

        a = self.args
        self.out = Path(a.out)
        if a.batch_size < 1 or a.top_k < 1:
            raise EvalSetupError("--batch-size and --top-k must be >= 1")
        if a.per_class is not None and a.per_class < 1 or a.total is not None and a.total < 1:
            raise EvalSetupError("--per-class and --total must be >= 1")
        self.sanity = [] if a.sanity in ("", "none") else [
            s.strip() for s in a.sanity.split(",") if s.strip()]
        bad = [s for s in self.sanity if s not in SANITY]
        if bad:
            raise EvalSetupError(f"unknown sanity check(s) {bad}; choose from "
                                 f"{', '.join(SANITY)} or none")
        bases = {m.strip() for m in a.methods.split(",") if m.strip()}
        if not bases or bases - set(METHODS):
            raise EvalSetupError(f"unknown method(s) {sorted(bases - set(METHODS))}; choose "
                                 f"from {', '.join(METHODS)}")
        if "texter" in bases and a.sae is None:
            raise EvalSetupError("method texter uses a TopK SAE: pass --sae PATH, or evaluate "
                                 "only texter-nosae / text2concept / random")
        loader_args = SimpleNamespace(
            classifier=a.classifier, clip=a.clip, aligner=a.aligner, sae=a.sae,
            no_sae="texter" not in bases, method="texter", class_names=None,
            text_cache=a.text_cache or str(self.out / ".text_cache"), out=str(self.out),
            bank=a.bank, bank_root=a.bank_root, no_generic=a.no_generic)
        self.loader = ExplainRun(loader_args)
        try:
            self.loader.load()
        except ExplainSetupError as e:
            raise EvalSetupError(str(e)) from e
        L = self.loader
        self.classifier, self.cvars = L.classifier, L.cvars
        self.aligner, self.sae = L.aligner, L.sae
        self.clip = L.clip
        self.clip_vars = self.loader.clip_vars
        self.class_names, class_ids = read_class_index(a.class_names,
                                                       self.classifier.num_classes)
        L.class_names = self.class_names
        self.methods = method_specs(a, self.classifier.image_size)
        self.identities = {k: checkpoint_identity(p) for k, p in
                           (("classifier", a.classifier), ("aligner", a.aligner),
                            ("sae", a.sae), ("spectrum", a.spectrum)) if p}
        self.magnitudes = {c: default_spectrum(c, a.spectrum) for c in
                           {m.config.maco.canvas for m in self.methods if m.config}}
        self.pullback = aligner_pullback(self.aligner.w, a.pullback)
        self.truth = load_truth(a.truth) if a.truth else None
        self.hit_k = _int_list(a.hit_k, "hit-k") if self.truth else []

        listed = list_image_folder(a.images, loose=a.no_labels)
        if a.no_labels:  # e.g. Pascal VOC: no accuracy / misclassified subsets
            labels, rule = {f: -1 for _, _, f in listed}, "none (--no-labels)"
        else:
            labels, rule = folder_labels([f for _, _, f in listed], self.class_names,
                                         class_ids, self.classifier.num_classes)
        self.label_rule = rule
        from eval.data import image_id

        everything = [EvalImage(p, rel, f, labels[f], image_id(rel)) for p, rel, f in listed]
        self.sample = sample(everything, per_class=a.per_class, total=a.total, seed=a.seed)
        self.sanity_set = {im.rel for im in self.sample[:a.sanity_max]}

        self.variant_vars: dict[str, Any] = {}
        self.variant_paths: dict[str, list[str]] = {}
        for v in (s for s in self.sanity if s in ("head", "top")):
            # a fixed stream per variant, whichever other variants run
            key = jax.random.fold_in(jax.random.key(a.seed), 1000 + SANITY.index(v))
            self.variant_vars[v], self.variant_paths[v] = randomized_variables(
                key, self.classifier, self.cvars, v, top_regex=a.sanity_top)
        self.fns = _jitted()
        self.baseline = np.zeros(self.classifier.feature_dim, np.float32)
        self.metric_config = {
            "top_k": a.top_k, "pullback": a.pullback, "center": a.direction_center,
            "baseline": a.baseline, "hit_k": self.hit_k, "sanity": self.sanity,
            "sanity_top": a.sanity_top, "preprocess": a.preprocess,
            "truth": checkpoint_identity(a.truth) if a.truth else None}
        self.metric_hash = stable_hash(self.metric_config)
        self.explain_hash = {m.label: stable_hash({
            "base": m.base, "config": _config_dict(m.config), "seed": a.seed,
            "models": self.identities, "preprocess": a.preprocess}) for m in self.methods}
        self.cache = ArtifactCache(a.cache or self.out / "cache")

    def _check_resume(self, store: RecordStore) -> None:
        for r in store.records:
            if r.get("metric_hash") != self.metric_hash:
                raise EvalSetupError(
                    f"{store.path} holds records scored with other metric settings "
                    f"({r.get('metric_config')}); use another --out (add --cache "
                    f"{self.cache.root} to reuse the concept images)")
            h = self.explain_hash.get(r["method"])
            if h is not None and r.get("explain_hash") != h:
                raise EvalSetupError(
                    f"{store.path} holds {r['method']!r} records made with other models or "
                    "settings; use another --out (or other ablation values)")

    def _dataset_mean(self) -> np.ndarray:
        """Mean classifier features over the readable sampled images (``--baseline mean``)."""
        from eval.data import load_for_classifier
        from texter_jax.io.images import ImageLoadError

        total, n = np.zeros(self.classifier.feature_dim, np.float64), 0
        bs = self.args.batch_size
        for s in range(0, len(self.sample), bs):
            imgs = []
            for im in self.sample[s:s + bs]:
                try:
                    imgs.append(load_for_classifier(im.path, self.classifier.image_size,
                                                    self.args.preprocess))
                except ImageLoadError:
                    pass
            if imgs:
                x = pad_rows(np.stack(imgs), bs)
                z = np.asarray(self.fns.predict(self.classifier, self.cvars, x).z)[:len(imgs)]
                total += z.sum(0)
                n += len(imgs)
        return (total / max(n, 1)).astype(np.float32)

    # -- artefacts ------------------------------------------------------------------

    def _keys(self, ims: list[EvalImage]):
        from texter_jax.explain import image_keys

        return image_keys(self.args.seed, [im.image_id for im in ims])

    def _cached_batch(self, tag: str, m: MethodSpec, ims, digests, compute) -> list[dict]:
        """Per-image artefacts from the cache, computing the missing ones in one padded
        batch with ``compute(positions) -> {name: [n, ...]}``."""
        keys = [self.cache.key(self.explain_hash[m.label], tag, d, im.image_id)
                for im, d in zip(ims, digests)]
        found = [self.cache.load(k) for k in keys]
        missing = [j for j, f in enumerate(found) if f is None]
        if missing:
            arrays = compute(missing)
            for i, j in enumerate(missing):
                row = {k: np.asarray(v[i]) for k, v in arrays.items()}
                self.cache.store(keys[j], row)
                found[j] = row
        return found

    def _texter(self, m: MethodSpec, ims, x, digests) -> list[dict]:
        from eval.pipeline import texter_artifacts

        bs = self.args.batch_size

        def compute(pos):
            xb = pad_rows(x[pos], bs)
            kb = self._keys(_pad_list([ims[p] for p in pos], bs))
            out = texter_artifacts(self.classifier, self.cvars, self.aligner, xb, kb, m.config,
                                   sae=self.sae, magnitude=self.magnitudes[m.config.maco.canvas])
            return {k: v[:len(pos)] for k, v in out.items()}

        return self._cached_batch("main", m, ims, digests, compute)

    def _variant(self, m: MethodSpec, variant: str, ims, x, digests, labels) -> list:
        """Crop embeddings [C, E] per image under a sanity variant (None: not run)."""
        from eval.pipeline import SEED_TAG, text2concept_artifacts, texter_variant

        on = [j for j, im in enumerate(ims) if im.rel in self.sanity_set]
        out: list = [None] * len(ims)
        if not on or m.base == "random" or (m.base == "text2concept"
                                            and variant in ("units", "seed")):
            return out
        model_vars = self.variant_vars.get(variant, self.cvars)
        if m.base == "text2concept":
            emb = text2concept_artifacts(self.classifier, model_vars, self.aligner,
                                         pad_rows(x[on], self.args.batch_size)
                                         )["crop_embeddings"]
            for i, j in enumerate(on):
                out[j] = emb[i]
            return out
        bs = self.args.batch_size
        sub = [ims[j] for j in on]

        def compute(pos):
            rows = [on[p] for p in pos]
            xb = pad_rows(x[rows], bs)
            kb = self._keys(_pad_list([ims[r] for r in rows], bs))
            cls = pad_rows(np.asarray(labels)[rows], bs)
            emb = texter_variant(self.classifier, model_vars, self.cvars, self.aligner, xb, kb,
                                 m.config, class_idx=cls, sae=self.sae,
                                 magnitude=self.magnitudes[m.config.maco.canvas],
                                 units="random" if variant == "units" else "ig",
                                 seed_tag=SEED_TAG if variant == "seed" else None)
            return {"crop_embeddings": emb[:len(pos)]}

        tag = f"sanity-{variant}-" + stable_hash(self.variant_paths.get(variant, []))
        found = self._cached_batch(tag, m, sub, [digests[j] for j in on], compute)
        for f, j in zip(found, on):
            out[j] = f["crop_embeddings"]
        return out

    # -- scoring ------------------------------------------------------------------

    def _score(self, m: MethodSpec, ims, z, labels, probs, clip_img, arts, variants) -> list[dict]:
        from texter_jax import mapping
        from texter_jax.mapping import l2_normalize

        a = self.args
        k = a.top_k
        n = len(ims)
        e = self.clip.embed_dim
        top_emb = np.zeros((n, k, e), np.float32)
        mask = np.zeros((n, k), bool)
        center = np.zeros((n, e), np.float32)
        ranked_all, scores_all, texts_all, temb_all = [], [], [], []
        for j, im in enumerate(ims):
            name = self.class_names[int(labels[j])]
            texts = self.loader.bank_for(name, im.path.stem)
            temb = self._text_embeddings(texts)
            if m.base == "random":
                rng = np.random.default_rng([a.seed, im.image_id])
                scores = rng.random(len(texts))
            else:
                scores = np.asarray(mapping.retrieve(arts[j]["crop_embeddings"][None],
                                                     temb))[0]
            order = np.argsort(-scores, kind="stable")
            top = order[:k]
            top_emb[j, :len(top)] = temb[top]
            mask[j, :len(top)] = True
            if a.direction_center == "bank":
                center[j] = np.asarray(l2_normalize(temb)).mean(0)
            ranked_all.append(order)
            scores_all.append(scores)
            texts_all.append(texts)
            temb_all.append(temb)
        bs = a.batch_size
        res = self.fns.metrics(self.classifier, self.cvars, self.pullback,
                               pad_rows(z, bs), pad_rows(np.asarray(labels, np.int32), bs),
                               pad_rows(clip_img, bs), pad_rows(top_emb, bs),
                               pad_rows(mask, bs), pad_rows(center, bs), self.baseline)
        res = {kk: np.asarray(v)[:n] for kk, v in res.items()}
        rhos = self._sanity_rhos(variants, scores_all, temb_all)
        hits = self._hits(ims, texts_all, ranked_all)
        recs = []
        for j, im in enumerate(ims):
            metrics = {kk: _num(res[kk][j]) for kk in (
                "clip_top1", "clip_topk", "directional_top1", "directional_topk",
                "directional_cos_top1", "directional_cos_topk", "insertion_auc",
                "deletion_auc")}
            metrics.update({kk: v[j] for kk, v in hits.items()})
            metrics.update({f"sanity_{v}_rho": r[j] for v, r in rhos.items()})
            # not applicable / not run / undefined: left out (the summary reads NaN)
            metrics = {kk: v for kk, v in metrics.items() if v is not None}
            order, texts, scores = ranked_all[j], texts_all[j], scores_all[j]
            rec = {
                "format": RECORD_FORMAT, "image": im.rel, "method": m.label,
                "base_method": m.base, "params": m.params, "label": im.label,
                "label_name": self.class_names[im.label] if im.label >= 0 else None,
                "pred": int(labels[j]), "pred_name": self.class_names[int(labels[j])],
                "prob": float(probs[j]),
                "correct": None if im.label < 0 else bool(int(labels[j]) == im.label),
                "n_concepts": len(texts),
                "top_concepts": [[texts[i], round(float(scores[i]), 6)]
                                 for i in order[:RECORD_TOP]],
                "metrics": metrics,
                "curves": {"insertion": [round(float(v), 6) for v in res["insertion_curve"][j]],
                           "deletion": [round(float(v), 6) for v in res["deletion_curve"][j]]},
                "explain_hash": self.explain_hash[m.label], "metric_hash": self.metric_hash,
                "metric_config": self.metric_config,
            }
            if arts is not None and "unit_ids" in arts[j]:
                ids = arts[j]["unit_ids"]
                rec["units"] = [int(u) for u in ids[ids >= 0]]
                rec["maco_retries"] = int(arts[j]["retries"])
            recs.append(rec)
        return recs

    def _text_embeddings(self, texts: list[str]) -> np.ndarray:
        """CLIP text embeddings [T, E] through the on-disk cache, memoised in memory."""
        memo = self.__dict__.setdefault("_text_memo", {})
        missing = [t for t in dict.fromkeys(texts) if t not in memo]
        if missing:
            emb = self.loader.text_cache.get(missing, self.loader.encode_texts)
            memo.update(zip(missing, emb))
        return np.stack([memo[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)

    def _sanity_rhos(self, variants, scores_all, temb_all) -> dict[str, list]:
        from texter_jax import mapping

        out = {}
        n = len(scores_all)
        for v, embs in variants.items():
            on = [j for j in range(n) if embs[j] is not None]
            vals: list = [None] * n
            if on:
                width = -(-max(len(scores_all[j]) for j in on) // 64) * 64
                a = np.zeros((self.args.batch_size, width), np.float32)
                b = np.zeros_like(a)
                mk = np.zeros(a.shape, bool)
                for i, j in enumerate(on):
                    t = len(scores_all[j])
                    a[i, :t] = scores_all[j]
                    b[i, :t] = np.asarray(mapping.retrieve(embs[j][None], temb_all[j]))[0]
                    mk[i, :t] = True
                mk[len(on):, :2] = True  # padding rows: any 2 valid slots
                b[len(on):, 1] = 1.0
                rho = np.asarray(self.fns.spearman(a, b, mk))
                for i, j in enumerate(on):
                    vals[j] = _num(rho[i])
            out[v] = vals
        return out

    def _hits(self, ims, texts_all, ranked_all) -> dict[str, list]:
        from eval.metrics import hits_at_k

        if self.truth is None:
            return {}
        out = {f"hit@{k}": [None] * len(ims) for k in self.hit_k}
        for j, im in enumerate(ims):
            pairs = self.truth.images.get(im.rel)
            if not pairs:
                continue
            ranking = [texts_all[j][i] for i in ranked_all[j][:max(self.hit_k)]]
            for k in self.hit_k:
                out[f"hit@{k}"][j] = float(hits_at_k([ranking], [pairs],
                                                     self.truth.meaning, k)[0])
        return out

    # -- the run --------------------------------------------------------------------

    def run(self) -> int:
        from tqdm import tqdm

        from eval.data import file_digest, load_for_classifier, load_for_clip
        from texter_jax.io.images import ImageLoadError

        a, group = self.args, self.group
        main_path = self.out_path() / "records.jsonl"
        try:
            self._setup()
            store = RecordStore(main_path)
            self._check_resume(store)
            # Several processes: each appends to its own part file; process 0 merges.
            own = store if group.count == 1 else RecordStore(
                part_path(main_path, group.index, group.count))
            self._check_resume(own)
        except (EvalSetupError, EvalDataError, FileNotFoundError, ValueError) as e:
            print(f"texter eval: error: {e}", file=sys.stderr)
            return 2
        for s in {store, own}:
            if s.dropped_tail:
                print(f"note: dropped a truncated last line of {s.path}", file=sys.stderr)
        if a.baseline == "mean":
            self.baseline = self._dataset_mean()
        done = store.done() | own.done()
        work = group.share(self.sample)
        pending = sum((im.rel, m.label) not in done for im in work for m in self.methods)
        share = "" if group.count == 1 else (
            f"process {group.index} of {group.count}: {len(work)} of them, ")
        print(f"texter eval: {len(self.sample)} images x {len(self.methods)} method(s); "
              f"{share}{pending} (image, method) pair(s) to compute, {len(done)} already "
              f"recorded (labels from {self.label_rule})", file=sys.stderr)
        limit = a.limit if a.limit is not None else pending
        new = 0
        t_start = time.perf_counter()
        bar = tqdm(total=min(pending, limit), desc="eval", unit="pair")
        size, csize = self.classifier.image_size, self.clip.image_size
        bs = a.batch_size
        for start in range(0, len(work), bs):
            if new >= limit:
                break
            chunk = work[start:start + bs]
            need = {m.label: [im.rel for im in chunk if (im.rel, m.label) not in done]
                    for m in self.methods}
            wanted = {r for v in need.values() for r in v}
            if not wanted:
                continue
            ok, x, xc, digests = [], [], [], []
            for im in chunk:
                if im.rel not in wanted:
                    continue
                try:
                    x.append(load_for_classifier(im.path, size, a.preprocess))
                    xc.append(load_for_clip(im.path, csize))
                    digests.append(file_digest(im.path))
                    ok.append(im)
                except (ImageLoadError, OSError) as e:
                    self.skipped[im.rel] = str(e)
                    tqdm.write(f"skipped: {e}", file=sys.stderr)
            if not ok:
                continue
            x, xc = np.stack(x), np.stack(xc)
            pred = self.fns.predict(self.classifier, self.cvars, pad_rows(x, bs))
            z = np.asarray(pred.z)[:len(ok)]
            labels = np.asarray(pred.label)[:len(ok)]
            probs = np.take_along_axis(np.asarray(pred.probs)[:len(ok)], labels[:, None],
                                       axis=1)[:, 0]
            clip_img = np.asarray(self.fns.clip_image(self.clip, self.clip_vars,
                                                      pad_rows(xc, bs)))[:len(ok)]
            for m in self.methods:
                pos = [j for j, im in enumerate(ok) if im.rel in need[m.label]]
                pos = pos[:max(0, limit - new)]
                if not pos:
                    continue
                t0 = time.perf_counter()
                ims = [ok[j] for j in pos]
                xs, ds, ls = x[pos], [digests[j] for j in pos], labels[pos]
                arts = None
                if m.base in ("texter", "texter-nosae"):
                    arts = self._texter(m, ims, xs, ds)
                elif m.base == "text2concept":
                    from eval.pipeline import text2concept_artifacts

                    emb = text2concept_artifacts(self.classifier, self.cvars, self.aligner,
                                                 pad_rows(xs, bs))["crop_embeddings"]
                    arts = [{"crop_embeddings": e} for e in emb[:len(ims)]]
                variants = {v: self._variant(m, v, ims, xs, ds, ls) for v in self.sanity}
                recs = self._score(m, ims, z[pos], ls, probs[pos], clip_img[pos], arts,
                                   variants)
                for r in recs:
                    own.append(r)
                    done.add((r["image"], r["method"]))
                new += len(recs)
                bar.update(len(recs))
                self.timing.setdefault(m.label, []).append(
                    (time.perf_counter() - t0) / len(recs))
                if new >= limit:
                    break
        bar.close()
        elapsed = time.perf_counter() - t_start
        if group.count > 1:
            infos = gather_parts(main_path, group, {
                "new": new, "pending": pending, "skipped": self.skipped,
                "timing": self.timing}, {im.rel: i for i, im in enumerate(self.sample)})
            if infos is None:
                print(f"process {group.index}: {new} new record(s); process 0 merges them "
                      f"into {main_path}", file=sys.stderr)
                return 0
            new, pending = sum(i["new"] for i in infos), sum(i["pending"] for i in infos)
            for info in infos[1:]:  # process 0's own are already in self
                self.skipped.update(info["skipped"])
                for k, v in info["timing"].items():
                    self.timing.setdefault(k, []).extend(v)
            store = RecordStore(main_path)
        self._finish(store, new, elapsed, pending)
        return 0 if len(store) else 1

    def out_path(self) -> Path:
        return Path(self.args.out)

    def _finish(self, store: RecordStore, new: int, elapsed: float, pending: int) -> None:
        from eval.plots import plot_curves, plot_distributions
        from eval.summary import METRIC_INFO, summarize, write_summary

        a = self.args
        labels = [m.label for m in self.methods]
        methods = labels + [m for m in dict.fromkeys(r["method"] for r in store.records)
                            if m not in labels]
        rows = summarize(store.records, methods, seed=a.seed, n_boot=a.n_boot, level=a.ci)
        notes = [f"Classifier `{a.classifier}`, CLIP `{a.clip}`, aligner `{a.aligner}`"
                 + (f", SAE `{a.sae}`" if a.sae else "") + f"; {len(self.sample)} sampled "
                 f"images, seed {a.seed}, top-k {a.top_k}, pull-back {a.pullback}, "
                 f"centre {a.direction_center}, baseline {a.baseline}."]
        csv_path, md_path = write_summary(self.out, rows, level=a.ci, notes=notes)
        plots = []
        if not a.no_plots and store.records:
            for p in (plot_curves(self.out / "curves.png", store.records, methods),
                      plot_distributions(self.out / "distributions.png", store.records,
                                         methods, [k for k in METRIC_INFO
                                                   if k not in ("accuracy", "prob")])):
                if p is not None:
                    plots.append(str(p))
        per_method = {k: {"seconds_per_image": float(np.mean(v)), "batches": len(v)}
                      for k, v in self.timing.items()}
        write_json_atomic(self.out / "run.json", {
            "format": "texter_jax/eval-run/v1",
            "args": {k: v for k, v in vars(a).items() if k != "func"},
            "methods": [{"label": m.label, "base": m.base, "config": _config_dict(m.config),
                         "explain_hash": self.explain_hash[m.label]} for m in self.methods],
            "metric_config": self.metric_config, "label_rule": self.label_rule,
            "sampled": len(self.sample), "records": len(store), "new_records": new,
            "pending_before": pending, "seconds": round(elapsed, 2),
            "pairs_per_minute": round(60 * new / elapsed, 2) if new and elapsed > 0 else None,
            "per_method": per_method,
            "skipped": [{"image": k, "error": v} for k, v in self.skipped.items()],
            "sanity_randomised": {k: {"n_tensors": len(v), "modules": _describe(v)}
                                  for k, v in self.variant_paths.items()},
            "cache": {"folder": str(self.cache.root), "hits": self.cache.hits,
                      "misses": self.cache.misses},
            "outputs": {"summary_md": str(md_path), "summary_csv": str(csv_path),
                        "plots": plots}})
        rate = f" ({60 * new / elapsed:.1f} pairs/min)" if new and elapsed > 0 else ""
        print(f"wrote {new} new record(s) in {elapsed:.1f}s{rate}; {len(store)} in "
              f"{self.out / 'records.jsonl'}; summary: {md_path}"
              + (f"; skipped {len(self.skipped)} unreadable image(s), listed in run.json"
                 if self.skipped else ""))


def _describe(paths: list[str]) -> str:
    from eval.sanity import describe

    return describe(paths)


def _pad_list(items: list, n: int) -> list:
    return items + [items[-1]] * (n - len(items))


def _num(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x
