"""Run in a fresh process with several host devices (``tests/test_sharding.py``): where
``explain_batch``'s stages put their work, read from the compiled programs and from
the arrays they return. Writes one JSON file of findings; the test asserts on it.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tests.multi_device_probe out.json
"""

import dataclasses
import json
import re
import sys
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_default_matmul_precision", "highest")

import texter_jax.emphasis.render as render  # noqa: E402
import texter_jax.explain as ex  # noqa: E402
from tests.test_explain import CONFIG, _setup  # noqa: E402
from texter_jax.batching import placement_over  # noqa: E402
from texter_jax.emphasis import default_spectrum, features_objective  # noqa: E402
from texter_jax.train.aligner import fit_sgd  # noqa: E402
from texter_jax.train.feature_forward import make_forward  # noqa: E402

COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "all-to-all",
               "reduce-scatter")
CALLS: dict[str, list] = {}


def _recording(name, factory):
    """A program factory whose programs remember each call's arguments."""
    def make(placement):
        program = factory(placement)

        def call(*args, **kw):
            CALLS.setdefault(name, []).append((program, args, kw))
            return program(*args, **kw)
        return call
    return make


MACO_PROGRAM = render.maco_batch_program


def install_recorders() -> None:
    """Every program explain_batch builds from here on remembers its calls."""
    ex.stage1_program = _recording("stage1", ex.stage1_program)
    ex.stage3_program = _recording("stage3", ex.stage3_program)
    ex.retrieve_program = _recording("retrieve", ex.retrieve_program)
    render.maco_batch_program = _recording("maco", render.maco_batch_program)


def collectives(hlo: str) -> dict[str, int]:
    return {op: len(re.findall(rf"\b{op}(-start)?\(", hlo)) for op in COLLECTIVES}


def split(leaf) -> dict:
    """How a device array is laid out: its shards' row counts and devices."""
    shards = leaf.addressable_shards
    return {"shape": list(leaf.shape), "rows": [int(s.data.shape[0]) for s in shards],
            "devices": sorted(int(s.device.id) for s in shards)}


def programs_report() -> dict:
    """Per program: collectives in each compiled call, and the layout of its outputs."""
    out = {}
    for name, calls in CALLS.items():
        entries = []
        for program, args, kw in calls:
            hlo = program.lower(*args, **kw).compile().as_text()
            outputs = [split(x) for x in jax.tree.leaves(program(*args, **kw))]
            entries.append({"collectives": collectives(hlo), "outputs": outputs,
                            "host_transfers": len(re.findall(r"\b(send|recv|outfeed)\(", hlo))})
        out[name] = entries
    CALLS.clear()
    return out


def run_case(clf, v, sae, al, text, images, keys, cfg, **kw) -> dict:
    with jax.transfer_guard_device_to_host("disallow"):
        arrays = ex.explain_arrays(clf, v, al, text, images, keys, cfg, sae=sae, **kw)
        explanation = ex.explain_batch(clf, v, al, text, images, keys, cfg, sae=sae, **kw)
    report = programs_report()
    report["arrays"] = [split(x) for x in jax.tree.leaves(arrays._replace(retries=None))]
    report["retries"] = explanation.retries.tolist()
    report["unit_ids"] = explanation.unit_ids.tolist()
    return report


def maco_memory(objective, magnitude, cfg, n_devices: int, batch: int) -> dict:
    """Per-device bytes of MACO compiled for ``batch`` images over ``n_devices`` devices."""
    placement = placement_over(jax.devices()[:n_devices])
    keys = jax.random.split(jax.random.key(0), batch)
    ids, mask = np.zeros((batch, 3), np.int32), np.ones((batch, 3), bool)
    keys, ids, mask = placement.put_batch((keys, ids, mask))
    objective, magnitude, token = placement.put_replicated(
        (objective, magnitude, np.int32(0)))
    m = MACO_PROGRAM(placement).lower(objective, keys, magnitude, ids, mask, token,
                                      config=cfg, every=0).compile().memory_analysis()
    return {"temp": int(m.temp_size_in_bytes), "argument": int(m.argument_size_in_bytes),
            "output": int(m.output_size_in_bytes)}


def aligner_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(250, 16)).astype(np.float32)
    y = (x @ rng.normal(size=(16, 8)) + 0.1 * rng.normal(size=(250, 8))).astype(np.float32)
    return x, y


def aligner_fit() -> dict:
    """The aligner's SGD (data parallel: a psum of gradients per step) on fixed data."""
    x, y = aligner_data()
    w, b, losses = fit_sgd(x, y, key=jax.random.key(0), epochs=3, batch_size=30)
    return {"w": w.tolist(), "b": b.tolist(), "losses": losses}


def feature_forward(clf, v, images) -> dict:
    """Feature extraction's forward with the batch split: layout and collectives."""
    forward, put = make_forward(clf.features, 8, variables=v, shard=True)
    x = put((images * 255).astype(np.uint8))
    z = forward(x)
    return {"layout": split(z), "z": np.asarray(z).tolist()}


def eight_images():
    """The tiny explain setup with 8 images (host weights: every placement is the
    library's)."""
    clf, v, sae, al, text, images = _setup()
    images = np.concatenate([images, images[::-1], images[:2]])
    return clf, jax.tree.map(np.asarray, v), sae, al, text, images


def sae_steps(placement=None, steps: int = 5, auxk: bool = False,
              batch_topk: bool = False) -> dict:
    """A few TopK SAE training steps (data parallel over ``placement``'s devices); with
    ``auxk`` the AuxK loss on latents silent for one batch; with ``batch_topk`` codes
    chosen over the whole batch."""
    from texter_jax.sae import SaeConfig, init_sae
    from texter_jax.train.sae_train import (
        AuxK,
        SaeTrainConfig,
        _zero_acc,
        aux_state,
        batch_topk_state,
        make_optimizer,
        make_train_step,
    )

    cfg = SaeConfig(input_dim=16, nb_concepts=64, top_k=8)
    tx = make_optimizer(SaeTrainConfig(lr=1e-2))
    params = init_sae(jax.random.key(1), cfg)
    state = {"params": params, "opt_state": tx.init(params), "acc": _zero_acc(64),
             "rng": jax.random.key_data(jax.random.key(0))}
    aux = AuxK(k_aux=8, dead_after=32) if auxk else None
    if aux:
        state.update(aux_state(64))
    if batch_topk:
        state.update(batch_topk_state())
    step = make_train_step(tx, cfg.top_k, placement, aux, batch_topk)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        state, loss = step(state, rng.normal(size=(32, 16)).astype(np.float32))
        losses.append(float(loss))
    acc = jax.device_get(state["acc"])
    extra = ({"aux": float(state["aux"]), "since": np.asarray(state["since"]).tolist()}
             if aux else {})
    if batch_topk:
        extra["threshold_sum"] = float(state["threshold_sum"])
    return {"losses": losses, "r2": float(acc.r2), "l0": float(acc.l0),
            "alive": int(np.sum(acc.alive)), **extra,
            "dictionary": np.asarray(state["params"]["dictionary"]["weights"]).tolist()}


def main(path: str) -> None:
    install_recorders()
    n = jax.device_count()
    clf, v, sae, al, text, images = eight_images()
    keys = ex.image_keys(3, range(8))
    found = {"devices": n}
    found["sae_units"] = run_case(clf, v, sae, al, text, images, keys, CONFIG)
    logit_cfg = dataclasses.replace(CONFIG, objective="class_logit")
    found["class_logit"] = run_case(clf, v, sae, al, text, images, keys, logit_cfg)
    # A class whose logit is constant (zero weights): MACO's gradient is zero, the
    # transparency stays empty and the rule re-runs those images. Its bias makes it the
    # prediction of some images only.
    logits = np.asarray(clf.logits(v, images))
    dead = jax.tree.map(np.array, v)
    head = dead["params"]["fc"]
    head["kernel"][:, 0] = 0.0
    head["bias"][0] = float(np.median(np.max(logits[:, 1:] + head["bias"][1:]
                                             - v["params"]["fc"]["bias"][1:], axis=1)))
    found["retry"] = run_case(clf, dead, sae, al, text, images, keys,
                              dataclasses.replace(logit_cfg, max_retries=2))
    found["retry"]["predicted_dead"] = (np.asarray(clf.logits(dead, images)).argmax(-1)
                                        == 0).tolist()
    # The batch really splits: per device, 4 devices at batch 4b need what one needs at b.
    objective = features_objective(clf, v)
    magnitude = default_spectrum(CONFIG.maco.canvas)
    found["memory"] = {f"{d}x{b}": maco_memory(objective, magnitude, CONFIG.maco, d, b)
                       for d, b in ((1, 2), (n, 2 * n))}
    found["aligner"] = aligner_fit()
    found["sae"] = sae_steps(placement_over(jax.devices()))
    found["sae_auxk"] = sae_steps(placement_over(jax.devices()), auxk=True)
    found["sae_batchtopk"] = sae_steps(placement_over(jax.devices()), batch_topk=True)
    found["features"] = feature_forward(clf, v, images)
    Path(path).write_text(json.dumps(found))


if __name__ == "__main__":
    main(sys.argv[1])
