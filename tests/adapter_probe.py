"""Explain the four adapter models (tests/adapter_models.py) and save the results: run in
a fresh process with several host devices by tests/test_adapters.py.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tests.adapter_probe out.npz
"""

import sys

import jax
import numpy as np

from tests.adapter_models import KINDS, build
from tests.test_adapters import CONFIG, explain_parts


def explain_all(done: dict | None = None) -> dict[str, np.ndarray]:
    """{kind/field: array} of each model's explanation of the same four images; ``done``
    holds explanations already made here ({kind: Explanation})."""
    out = {}
    for kind in KINDS:
        if done and kind in done:
            ex = done[kind]
        else:
            clf, variables, _ = build(kind)
            ex = explain_parts(clf, variables, CONFIG)
        for field in ("label", "unit_ids", "concept_image", "crop_embeddings"):
            out[f"{kind}/{field}"] = np.asarray(getattr(ex, field))
    return out


if __name__ == "__main__":
    results = explain_all()
    results["n_devices"] = np.asarray(jax.local_device_count())
    np.savez(sys.argv[1], **results)
