"""Scoring a batch of explanations: every metric of ``texter eval`` in one jitted call.

:func:`jitted` builds the runner's jitted batch functions once per process (repeated runs
in one process, e.g. tests, reuse the compiled programs); :class:`Scorer` turns a batch's
crop embeddings into ranked concepts and one record per (image, method).
"""

from __future__ import annotations

import dataclasses
import functools
from types import SimpleNamespace
from typing import Any

import jax.numpy as jnp
import numpy as np

from texter_jax import mapping
from texter_jax.batching import pad_rows, run_split, split_program
from texter_jax.eval.methods import MethodSpec
from texter_jax.eval.metrics import (
    clip_scores,
    curve_auc,
    deletion_curve,
    directional_derivatives,
    feature_directions,
    hits_at_k,
    insertion_curve,
    spearman,
)
from texter_jax.explain import predict
from texter_jax.mapping import l2_normalize
from texter_jax.session import Session

RECORD_FORMAT = "texter_jax/eval-record/v1"
# concepts kept per record (the full ranking is recomputable from the cache)
RECORD_TOP = 10


def _predict(variables, images, *, classifier):
    return predict(classifier, variables, images)


def _clip_image(variables, images, *, clip):
    return clip.encode_image(variables, images)


def _metrics(variables, pullback, z, cls, clip_img, top_emb, mask, center, baseline, *,
             classifier):
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


# The runner's batch programs, data parallel: images and per-image rows split over the
# local devices, weights whole on each (built once per placement, so repeated runs in
# one process, e.g. tests, reuse the compiled programs).
PROGRAMS = {
    "predict": split_program(_predict, (False, True), static_argnames=("classifier",)),
    "clip_image": split_program(_clip_image, (False, True), static_argnames=("clip",)),
    "metrics": split_program(_metrics, (False, False) + (True,) * 6 + (False,),
                             static_argnames=("classifier",)),
    "spearman": split_program(spearman, (True, True, True)),
}


def jitted() -> SimpleNamespace:
    """The runner's batch functions: ``predict(classifier, variables, images)``,
    ``clip_image(clip, variables, images)``, ``metrics(classifier, variables, pullback,
    z, cls, clip_img, top_emb, mask, center, baseline)`` and ``spearman(a, b, mask)``;
    each pads its batch to the device count, runs split over the local devices and
    returns host arrays of its rows."""
    def bind(name, static=None):
        if static is None:
            return functools.partial(run_split, PROGRAMS[name])
        return lambda model, *arrays: run_split(PROGRAMS[name], *arrays, **{static: model})

    return SimpleNamespace(predict=bind("predict", "classifier"),
                           clip_image=bind("clip_image", "clip"),
                           metrics=bind("metrics", "classifier"),
                           spearman=bind("spearman"))


@dataclasses.dataclass
class Scorer:
    """What scoring needs: the session, the jitted functions and the metric settings."""

    session: Session
    fns: Any
    args: Any  # top_k, direction_center, batch_size, seed
    pullback: np.ndarray
    baseline: np.ndarray
    truth: Any
    hit_k: list[int]
    explain_hash: dict[str, str]
    metric_hash: str
    metric_config: dict

    def score(self, m: MethodSpec, ims, z, labels, probs, clip_img, arts,
              variants) -> list[dict]:
        """Records for B images of method ``m``: z [B, D], labels/probs [B] (the real
        model's prediction), clip_img [B, E], arts (per image: ``crop_embeddings``
        [C, E], ...; None for ``random``), variants {name: per-image [C, E] or None}."""
        a = self.args
        k = a.top_k
        n = len(ims)
        e = self.session.clip.embed_dim
        top_emb = np.zeros((n, k, e), np.float32)
        mask = np.zeros((n, k), bool)
        center = np.zeros((n, e), np.float32)
        ranked_all, scores_all, texts_all, temb_all = [], [], [], []
        for j, im in enumerate(ims):
            name = self.session.class_names[int(labels[j])]
            texts = self.session.bank_for(name, im.path.stem)
            temb = self.session.text_embeddings(texts)
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
        res = self.fns.metrics(self.session.classifier, self.session.variables, self.pullback,
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
                "label_name": self.session.class_names[im.label] if im.label >= 0 else None,
                "pred": int(labels[j]), "pred_name": self.session.class_names[int(labels[j])],
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

    def _sanity_rhos(self, variants, scores_all, temb_all) -> dict[str, list]:
        """Spearman's rho per image between the real concept scores and a variant's."""
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


def _num(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x
