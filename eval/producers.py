"""The explanations ``texter eval`` scores, through the library and a per-image cache.

TEXTER runs through :meth:`texter_jax.session.Session.explain` (``explain_batch``);
the sanity variants use its hooks: a randomised model selects and emphasises units
(``variables``) while the real one reads the concept image (``reader_variables``), the
class explained is the real model's prediction (``class_idx``), units are drawn at
random (``units="random"``), or every stream comes from another seed
(``KEY_TAGS["another_seed"]``). Text-to-Concept reads the image's global features.
Concept-image artefacts are cached per (method hash, tag, file digest, image id) so
re-scoring never re-runs MACO.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from texter_jax.batching import pad_rows
from texter_jax.eval.data import EvalImage
from texter_jax.eval.methods import TEXTER_METHODS, MethodSpec
from texter_jax.eval.records import ArtifactCache, stable_hash
from texter_jax.explain import fold_keys, image_keys
from texter_jax.session import Session

# What each artefact a TEXTER run caches holds, per image.
TEXTER_FIELDS = ("label", "prob", "crop_embeddings", "unit_ids", "unit_scores", "n_units",
                 "retries")


@dataclasses.dataclass
class Producer:
    """Explanations for batches of one method, padded to ``batch_size`` rows (one
    compiled program per method) and cached."""

    session: Session
    cache: ArtifactCache
    explain_hash: dict[str, str]
    magnitudes: dict[int, np.ndarray]  # canvas -> MACO template
    seed: int
    batch_size: int
    sanity_set: set[str] = dataclasses.field(default_factory=set)
    variant_vars: dict[str, Any] = dataclasses.field(default_factory=dict)
    variant_paths: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def _keys(self, ims: list[EvalImage]):
        return image_keys(self.seed, [im.image_id for im in ims])

    def _cached(self, tag: str, m: MethodSpec, ims, digests,
                compute: Callable[[list[int]], dict]) -> list[dict]:
        """Per-image artefacts from the cache, computing the missing ones in one padded
        batch with ``compute(positions) -> {name: [n, ...]}``."""
        keys = [self.cache.key(self.explain_hash[m.label], tag, d, im.image_id)
                for im, d in zip(ims, digests, strict=True)]
        found = [self.cache.load(k) for k in keys]
        missing = [j for j, f in enumerate(found) if f is None]
        if missing:
            arrays = compute(missing)
            for i, j in enumerate(missing):
                row = {k: np.asarray(v[i]) for k, v in arrays.items()}
                self.cache.store(keys[j], row)
                found[j] = row
        return found

    def _texter(self, m: MethodSpec, ims, x, *, variables=None, class_idx=None,
                units: str = "ig", another_seed: bool = False) -> dict[str, np.ndarray]:
        """One padded explain_batch call for ``ims`` (rows of ``x``)."""
        bs, n = self.batch_size, len(ims)
        keys = self._keys(ims + [ims[-1]] * (bs - n))
        if another_seed:
            keys = fold_keys(keys, "another_seed")
        hooks = {} if variables is None else {"variables": variables,
                                              "reader_variables": self.session.variables}
        if class_idx is not None:
            hooks["class_idx"] = pad_rows(np.asarray(class_idx, np.int32), bs)
        ex = self.session.explain(pad_rows(x, bs), keys, m.config,
                                  magnitude=self.magnitudes[m.config.maco.canvas],
                                  units=units, **hooks)
        return {f: getattr(ex, f)[:n] for f in TEXTER_FIELDS}

    def text2concept(self, x, variables=None) -> np.ndarray:
        """Text-to-Concept's one "crop" per image: [B, 1, E]."""
        n = len(x)
        return self.session.text_to_concept(pad_rows(x, self.batch_size), variables)[2][:n]

    def main(self, m: MethodSpec, ims, x, digests) -> list[dict] | None:
        """The method's own artefacts per image (None for ``random``: nothing to run)."""
        if m.base in TEXTER_METHODS:
            return self._cached("main", m, ims, digests, lambda pos: self._texter(
                m, [ims[p] for p in pos], x[pos]))
        if m.base == "text2concept":
            return [{"crop_embeddings": e} for e in self.text2concept(x)]
        return None

    def variant(self, m: MethodSpec, variant: str, ims, x, digests, labels) -> list:
        """Crop embeddings [C, E] per image under a sanity variant (None: not run)."""
        on = [j for j, im in enumerate(ims) if im.rel in self.sanity_set]
        out: list = [None] * len(ims)
        if not on or m.base == "random" or (m.base == "text2concept"
                                            and variant in ("units", "seed")):
            return out
        model_vars = self.variant_vars.get(variant)
        if m.base == "text2concept":
            for i, e in zip(on, self.text2concept(x[on], model_vars), strict=True):
                out[i] = e
            return out

        def compute(pos):
            rows = [on[p] for p in pos]
            return {"crop_embeddings": self._texter(
                m, [ims[r] for r in rows], x[rows],
                variables=self.session.variables if model_vars is None else model_vars,
                class_idx=np.asarray(labels)[rows],
                units="random" if variant == "units" else "ig",
                another_seed=variant == "seed")["crop_embeddings"]}

        tag = f"sanity-{variant}-" + stable_hash(self.variant_paths.get(variant, []))
        found = self._cached(tag, m, [ims[j] for j in on], [digests[j] for j in on], compute)
        for f, j in zip(found, on, strict=True):
            out[j] = f["crop_embeddings"]
        return out
