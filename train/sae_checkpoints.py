"""The SAE training run folder: its settings file, its Orbax checkpoints and resuming.

Layout of ``<out>``: ``train_config.json`` (the run's identity: a resume with other
settings is refused), ``checkpoints/<global step>/`` (state and JSON meta: epoch, step in
epoch, logs), ``sae/`` (the final SAE, :mod:`texter_jax.sae`'s folder format).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from texter_jax.io.atomic import write_json_atomic
from texter_jax.io.checkpoints import CheckpointError

TRAIN_FORMAT = "texter_jax/sae_train/v1"
TRAIN_CONFIG = "train_config.json"
CKPT_DIR = "checkpoints"
FINAL_DIR = "sae"


def check_run_folder(out: Path, wanted: dict[str, Any]) -> None:
    cfg_path = out / TRAIN_CONFIG
    if cfg_path.is_file():
        try:
            have = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cfg_path} is corrupt (not JSON): {e}") from e
        if have.get("format") != TRAIN_FORMAT:
            raise CheckpointError(f"{cfg_path}: format {have.get('format')!r}, expected "
                                  f"{TRAIN_FORMAT!r}; {out} is not an SAE training folder")
        diff = [k for k in ("sae", "train", "data") if have.get(k) != wanted[k]]
        if diff:
            raise CheckpointError(
                f"{out} holds a run with other settings ({', '.join(diff)}: "
                f"{ {k: have.get(k) for k in diff} } vs { {k: wanted[k] for k in diff} }); "
                "use another output folder")
        return
    if out.exists() and any(p.name != FINAL_DIR for p in out.iterdir()):
        raise CheckpointError(f"{out} is not empty and has no {TRAIN_CONFIG}; refusing to "
                              "train into a foreign folder")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cfg_path, wanted)


def host_copy(tree):
    # Real copies: the device buffers are donated to the next step.
    return jax.tree.map(lambda a: np.array(a, copy=True), tree)


def open_checkpoints(ckpt_dir: Path, max_to_keep: int) -> ocp.CheckpointManager:
    """The run's Orbax checkpoint manager; a folder that is neither empty nor Orbax's is
    refused (CheckpointError naming it)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           cleanup_tmp_directories=True)
    try:
        mngr = ocp.CheckpointManager(ckpt_dir, options=options)
        steps = mngr.all_steps()
    except Exception as e:
        raise CheckpointError(f"cannot open checkpoint folder {ckpt_dir}: {e}") from e
    if not steps and any(ckpt_dir.iterdir()):
        mngr.close()
        raise CheckpointError(f"{ckpt_dir} holds no Orbax checkpoint steps but is not empty "
                              "(corrupt or foreign folder)")
    return mngr


def resume(mngr: ocp.CheckpointManager, ckpt_dir: Path, abstract, seed_key_data):
    """The latest checkpoint as ``(state, epoch, step_in_epoch, global_step, logs)``, or
    None for a fresh run. Closes ``mngr`` and raises CheckpointError (naming the step's
    folder) when it cannot be read or was made with another seed."""
    steps = mngr.all_steps()
    if not steps:
        return None
    latest = max(steps)
    try:
        restored = mngr.restore(latest, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        state, meta = restored["state"], restored["meta"]
        epoch, start_step = int(meta["epoch"]), int(meta["step_in_epoch"])
        global_step, logs = int(meta["global_step"]), list(meta["logs"])
    except Exception as e:
        mngr.close()
        raise CheckpointError(f"cannot resume from checkpoint {ckpt_dir / str(latest)}: "
                              f"{type(e).__name__}: {e}") from e
    if not np.array_equal(np.asarray(state["rng"]), np.asarray(seed_key_data)):
        mngr.close()
        raise CheckpointError(f"{ckpt_dir / str(latest)} was made with another seed")
    return jax.tree.map(jnp.asarray, state), epoch, start_step, global_step, logs
