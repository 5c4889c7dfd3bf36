"""Plumbing of ``texter eval``: sample an image folder, explain with every method, score.

Builds a :class:`texter_jax.session.Session` as ``texter explain`` does
(:func:`texter_jax.converters.artifacts.load_session`); the methods are in
:mod:`texter_jax.eval.methods`, the explanations in :mod:`texter_jax.eval.producers`, the
metrics in :mod:`texter_jax.eval.scoring` and :mod:`texter_jax.eval.metrics`, the end-of-run
files in :mod:`texter_jax.eval.run_report`. Writes into ``--out``:

* ``records.jsonl``: one line per (image, method), appended and flushed as computed;
  a re-run skips the pairs already there (resume) and tolerates a truncated last line;
* ``summary.md`` / ``summary.csv``: means and bootstrap CIs per method, subset, metric;
* ``curves.png`` / ``distributions.png``;
* ``run.json``: settings, skipped images, sanity randomisations, timings;
* ``cache/``: concept-image artefacts (.npz) so re-scoring never re-runs MACO.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from texter_jax.batching import pad_rows
from texter_jax.converters.artifacts import load_session
from texter_jax.distributed import SINGLE
from texter_jax.emphasis import default_spectrum
from texter_jax.eval.data import (
    EvalDataError,
    EvalImage,
    file_digest,
    folder_labels,
    image_id,
    list_image_folder,
    load_for_classifier,
    load_for_clip,
    load_truth,
    read_class_index,
    sample,
)
from texter_jax.eval.methods import (
    METHODS,
    EvalSetupError,
    MethodSpec,
    config_dict,
    int_list,
    method_bases,
    method_specs,
)
from texter_jax.eval.metrics import aligner_pullback
from texter_jax.eval.producers import Producer
from texter_jax.eval.records import ArtifactCache, RecordStore, gather_parts, part_path, stable_hash
from texter_jax.eval.run_report import write_eval_page, write_run_report
from texter_jax.eval.sanity import randomized_variables
from texter_jax.eval.scoring import Scorer, jitted
from texter_jax.io.images import ImageLoadError
from texter_jax.session import Banks, SessionError
from texter_jax.text_cache import checkpoint_identity

SANITY = ("head", "top", "units", "seed")
__all__ = ["EvalRun", "EvalSetupError", "MethodSpec", "METHODS", "SANITY"]


class EvalRun:
    """One ``texter eval`` invocation (see :mod:`texter_jax.cli.eval_cli` for the flags)."""

    def __init__(self, args, group=None):
        self.args = args
        self.out = Path(args.out)
        self.group = group or SINGLE  # several processes: each explains its share
        self.skipped: dict[str, str] = {}
        self.timing: dict[str, list[float]] = {}

    # -- set-up -------------------------------------------------------------------

    def _check_args(self) -> list[str]:
        a = self.args
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
        bases = method_bases(a.methods)
        if "texter" in bases and a.sae is None:
            raise EvalSetupError("method texter uses a TopK SAE: pass --sae PATH, or evaluate "
                                 "only texter-nosae / text2concept / random")
        return bases

    def _sample(self, class_ids) -> None:
        a, clf = self.args, self.session.classifier
        listed = list_image_folder(a.images, loose=a.no_labels)
        if a.no_labels:  # e.g. Pascal VOC: no accuracy / misclassified subsets
            labels, rule = {f: -1 for _, _, f in listed}, "none (--no-labels)"
        else:
            labels, rule = folder_labels([f for _, _, f in listed], self.session.class_names,
                                         class_ids, clf.num_classes)
        self.label_rule = rule
        everything = [EvalImage(p, rel, f, labels[f], image_id(rel)) for p, rel, f in listed]
        self.sample = sample(everything, per_class=a.per_class, total=a.total, seed=a.seed)

    def _setup(self) -> None:
        a = self.args
        bases = self._check_args()
        try:
            self.session = load_session(
                a.classifier, a.clip, a.aligner, a.sae if "texter" in bases else None,
                class_names=a.class_names, text_cache=a.text_cache or self.out / ".text_cache",
                banks=Banks(root=a.bank_root, files=tuple(a.bank),
                            use_generic=False if a.no_generic else None))
        except SessionError as e:
            raise EvalSetupError(str(e)) from e
        clf = self.session.classifier
        class_ids = read_class_index(a.class_names, clf.num_classes)[1]
        self.methods = method_specs(a, clf.image_size)
        identities = {k: checkpoint_identity(p) for k, p in
                      (("classifier", a.classifier), ("aligner", a.aligner),
                       ("sae", a.sae), ("spectrum", a.spectrum)) if p}
        self._sample(class_ids)
        truth = load_truth(a.truth) if a.truth else None
        self.metric_config = {
            "top_k": a.top_k, "pullback": a.pullback, "center": a.direction_center,
            "baseline": a.baseline, "hit_k": int_list(a.hit_k, "hit-k") if truth else [],
            "sanity": self.sanity, "sanity_top": a.sanity_top, "preprocess": a.preprocess,
            "truth": checkpoint_identity(a.truth) if a.truth else None}
        self.explain_hash = {m.label: stable_hash({
            "base": m.base, "config": config_dict(m.config), "seed": a.seed,
            "models": identities, "preprocess": a.preprocess}) for m in self.methods}
        self.producer = Producer(
            self.session, ArtifactCache(a.cache or self.out / "cache"), self.explain_hash,
            {c: default_spectrum(c, a.spectrum) for c in
             {m.config.maco.canvas for m in self.methods if m.config}},
            a.seed, a.batch_size, {im.rel for im in self.sample[:a.sanity_max]})
        for v in (s for s in self.sanity if s in ("head", "top")):
            # a fixed stream per variant, whichever other variants run
            key = jax.random.fold_in(jax.random.key(a.seed), 1000 + SANITY.index(v))
            self.producer.variant_vars[v], self.producer.variant_paths[v] = \
                randomized_variables(key, clf, self.session.variables, v,
                                     top_regex=a.sanity_top)
        self.scorer = Scorer(
            self.session, jitted(), a, aligner_pullback(self.session.aligner.w, a.pullback),
            np.zeros(clf.feature_dim, np.float32), truth, self.metric_config["hit_k"],
            self.explain_hash, stable_hash(self.metric_config), self.metric_config)

    def _check_resume(self, store: RecordStore) -> None:
        for r in store.records:
            if r.get("metric_hash") != self.scorer.metric_hash:
                raise EvalSetupError(
                    f"{store.path} holds records scored with other metric settings "
                    f"({r.get('metric_config')}); use another --out (add --cache "
                    f"{self.producer.cache.root} to reuse the concept images)")
            h = self.explain_hash.get(r["method"])
            if h is not None and r.get("explain_hash") != h:
                raise EvalSetupError(
                    f"{store.path} holds {r['method']!r} records made with other models or "
                    "settings; use another --out (or other ablation values)")

    def _predict(self, x: np.ndarray):
        """The real model's features [B, D], labels [B] and their probabilities [B]."""
        s, bs = self.session, self.args.batch_size
        pred = self.scorer.fns.predict(s.classifier, s.variables, pad_rows(x, bs))
        n = len(x)
        labels = np.asarray(pred.label)[:n]
        probs = np.take_along_axis(np.asarray(pred.probs)[:n], labels[:, None], axis=1)[:, 0]
        return np.asarray(pred.z)[:n], labels, probs

    def _dataset_mean(self) -> np.ndarray:
        """Mean classifier features over the readable sampled images (``--baseline mean``)."""
        clf, bs = self.session.classifier, self.args.batch_size
        total, n = np.zeros(clf.feature_dim, np.float64), 0
        for s in range(0, len(self.sample), bs):
            imgs = []
            for im in self.sample[s:s + bs]:
                try:
                    imgs.append(load_for_classifier(im.path, clf.image_size,
                                                    self.args.preprocess))
                except ImageLoadError:
                    pass
            if imgs:
                total += self._predict(np.stack(imgs))[0].sum(0)
                n += len(imgs)
        return (total / max(n, 1)).astype(np.float32)

    def _load_batch(self, chunk: list[EvalImage], wanted: set[str]):
        """The wanted images of ``chunk`` that read: (images, classifier inputs,
        CLIP inputs, file digests); the others are recorded as skipped."""
        a, s = self.args, self.session
        ok, x, xc, digests = [], [], [], []
        for im in chunk:
            if im.rel not in wanted:
                continue
            try:
                x.append(load_for_classifier(im.path, s.classifier.image_size, a.preprocess))
                xc.append(load_for_clip(im.path, s.clip.image_size))
                digests.append(file_digest(im.path))
                ok.append(im)
            except (ImageLoadError, OSError) as e:
                self.skipped[im.rel] = str(e)
                tqdm.write(f"skipped: {e}", file=sys.stderr)
        return ok, x, xc, digests

    # -- the run --------------------------------------------------------------------

    def _open_stores(self):
        """The run's records and, with several processes, this process's own part file."""
        group = self.group
        main_path = self.out / "records.jsonl"
        store = RecordStore(main_path)
        self._check_resume(store)
        # Several processes: each appends to its own part file; process 0 merges.
        own = store if group.count == 1 else RecordStore(
            part_path(main_path, group.index, group.count))
        self._check_resume(own)
        return store, own

    def _run_batch(self, chunk, need, own: RecordStore, done: set, budget: int, bar) -> int:
        """Explains and scores the pairs of ``chunk`` in ``need``; returns records added."""
        ok, x, xc, digests = self._load_batch(chunk, {r for v in need.values() for r in v})
        if not ok:
            return 0
        x, xc = np.stack(x), np.stack(xc)
        z, labels, probs = self._predict(x)
        s = self.session
        clip_img = np.asarray(self.scorer.fns.clip_image(
            s.clip, s.clip_variables, pad_rows(xc, self.args.batch_size)))[:len(ok)]
        new = 0
        for m in self.methods:
            pos = [j for j, im in enumerate(ok) if im.rel in need[m.label]]
            pos = pos[:max(0, budget - new)]
            if not pos:
                continue
            t0 = time.perf_counter()
            ims = [ok[j] for j in pos]
            xs, ds, ls = x[pos], [digests[j] for j in pos], labels[pos]
            arts = self.producer.main(m, ims, xs, ds)
            variants = {v: self.producer.variant(m, v, ims, xs, ds, ls) for v in self.sanity}
            recs = self.scorer.score(m, ims, z[pos], ls, probs[pos], clip_img[pos], arts,
                                     variants)
            for r in recs:
                own.append(r)
                done.add((r["image"], r["method"]))
            new += len(recs)
            bar.update(len(recs))
            self.timing.setdefault(m.label, []).append((time.perf_counter() - t0) / len(recs))
            if new >= budget:
                break
        return new

    def run(self) -> int:
        a, group = self.args, self.group
        try:
            self._setup()
            store, own = self._open_stores()
        except (EvalSetupError, EvalDataError, FileNotFoundError, ValueError) as e:
            print(f"texter eval: error: {e}", file=sys.stderr)
            return 2
        for s in {store, own}:
            if s.dropped_tail:
                print(f"note: dropped a truncated last line of {s.path}", file=sys.stderr)
        if a.baseline == "mean":
            self.scorer.baseline = self._dataset_mean()
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
        for start in range(0, len(work), a.batch_size):
            if new >= limit:
                break
            chunk = work[start:start + a.batch_size]
            need = {m.label: [im.rel for im in chunk if (im.rel, m.label) not in done]
                    for m in self.methods}
            if any(need.values()):
                new += self._run_batch(chunk, need, own, done, limit - new, bar)
                if group.count == 1:  # the page, refreshed as the run goes
                    write_eval_page(self, own)
        bar.close()
        elapsed = time.perf_counter() - t_start
        if group.count > 1:
            main_path = self.out / "records.jsonl"
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
        write_run_report(self, store, new, elapsed, pending)
        return 0 if len(store) else 1
