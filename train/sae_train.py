"""TopK SAE training with Optax, resumable bit-for-bit from Orbax checkpoints.

Release recipe (``train_sae.py`` + ``overcomplete/sae/train.py``): Adam lr 5e-4
(betas 0.9/0.999, eps 1e-8), MSE loss, batch 1024, 10 epochs, clipping of the global
gradient norm over all parameters at 1.0 (torch ``clip_grad_norm_``: scale by
``max / (norm + 1e-6)`` when that is < 1). The release's dictionary layer, in training
mode, re-projects its raw weights onto unit rows (in place, no gradient) at the start of
every forward and then differentiates the plain product ``codes @ W``; it never
normalises after the last step. We do the same: :func:`texter_jax.sae.project_dictionary`
at the start of every step, the loss through ``codes @ W`` (not through the
normalisation), and the fixed ``multiplier`` gets no update.

Data: :class:`texter_jax.train.features.FeatureShards` (memory-mapped), visited in a permutation
drawn from ``fold_in(data_key, epoch)``; the last ``N mod batch`` rows of each epoch's
permutation are dropped so every step has the same shape (the release's DataLoader keeps
a short last batch). Batch ``s`` of epoch ``e`` depends only on ``(seed, e, s)``, so a run
resumed from any checkpoint replays the exact remaining batches.

Output folder::

    <out>/train_config.json   format, SAE shape, training hyperparameters, data summary
    <out>/checkpoints/<step>/ Orbax CheckpointManager: "state" (params, optimizer state,
                              epoch accumulators, PRNG key data) + "meta" JSON (epoch,
                              step in epoch, global step, finished epoch logs)
    <out>/sae/                final params (see :func:`texter_jax.sae.save`)

Logs per epoch (as the release prints them): mean loss, mean batch R^2 (release
definition ``1 - MSE / (var of all entries + 1e-6)``), L0 (mean number of active codes
per row) and the dead fraction (latents never active during the epoch).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from texter_jax import sae as sae_io
from texter_jax.batching import local_placement
from texter_jax.sae import (
    SaeConfig,
    SaeParams,
    init_sae,
    project_dictionary,
    sae_apply,
    tie_decoder_to_encoder,
)
from texter_jax.sae_auxk import AUX_COEF, dead_latents
from texter_jax.train.sae_checkpoints import (
    CKPT_DIR,
    FINAL_DIR,
    TRAIN_FORMAT,
    check_run_folder,
    host_copy,
    open_checkpoints,
    resume,
)

# The step lives in texter_jax.train.sae_step; its names stay importable from here.
from texter_jax.train.sae_step import (  # noqa: F401
    L0_THRESHOLD,
    R2_EPS,
    TORCH_CLIP_EPS,
    AuxK,
    EpochAcc,
    _zero_acc,
    aux_state,
    batch_r2,
    batch_topk_state,
    clip_by_global_norm_torch,
    make_optimizer,
    make_train_step,
    release_loss,
)
from texter_jax.types import PRNGKey


@dataclasses.dataclass(frozen=True, kw_only=True)
class SaeTrainConfig:
    """Training hyperparameters (release defaults).

    Attributes:
      epochs: passes over the data.
      batch_size: rows per step (the epoch's remainder is dropped).
      lr: Adam learning rate.
      clip_norm: global gradient-norm clip (0 disables).
      seed: derives the init key and every epoch's permutation.
      checkpoint_every: save every this many steps (0: only at epoch ends).
      max_to_keep: checkpoints kept on disk.
      aux_k: dead latents that reconstruct the residual in the AuxK loss (Gao et al.
        2024); 0 (the release) turns AuxK off.
      aux_coef: the AuxK loss's weight (the paper's 1/32).
      dead_after: rows without firing after which a latent counts as dead for AuxK (0:
        one epoch's rows).
      tied_init: start the dictionary as the encoder's transpose (unit rows) instead of
        the release's independent Xavier draw.
    """

    epochs: int = 10
    batch_size: int = 1024
    lr: float = 5e-4
    clip_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 1000
    max_to_keep: int = 2
    aux_k: int = 0
    aux_coef: float = AUX_COEF
    dead_after: int = 0
    tied_init: bool = False

    def __post_init__(self):
        if self.aux_k < 0 or self.dead_after < 0:
            raise ValueError(f"aux_k and dead_after must be >= 0, got {self.aux_k}, "
                             f"{self.dead_after}")

    def auxk(self, rows_per_epoch: int) -> AuxK | None:
        """The step's AuxK settings, None when off."""
        if not self.aux_k:
            return None
        return AuxK(self.aux_k, self.dead_after or rows_per_epoch, self.aux_coef)

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share (epochs may grow, checkpoint cadence may
        change)."""
        d = dataclasses.asdict(self)
        d.pop("epochs")
        d.pop("checkpoint_every")
        d.pop("max_to_keep")
        # runs without the AuxK/tied options keep the identity they had before them
        for name, off in (("aux_k", 0), ("aux_coef", AUX_COEF), ("dead_after", 0),
                          ("tied_init", False)):
            if d[name] == off:
                d.pop(name)
        return d



@functools.partial(jax.jit, static_argnums=2)
def _permutation(key: PRNGKey, epoch, n: int) -> jax.Array:
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def epoch_order(key: PRNGKey, epoch: int, n: int, batch_size: int) -> np.ndarray:
    """Row indices int64 [steps, batch] of ``epoch``: a permutation from
    ``fold_in(key, epoch)``, remainder dropped."""
    perm = np.asarray(_permutation(key, epoch, n))
    steps = n // batch_size
    return perm[:steps * batch_size].reshape(steps, batch_size).astype(np.int64)


def iterate_batches(shards, order: np.ndarray, start: int = 0, prefetch: int = 2
                    ) -> Iterator[np.ndarray]:
    """Yields float32 [B, d] batches ``order[start:]`` read from ``shards``, with
    ``prefetch`` batches gathered ahead in a background thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = [pool.submit(shards.take, order[s])
                   for s in range(start, min(start + prefetch, len(order)))]
        nxt = start + len(pending)
        while pending:
            batch = pending.pop(0).result()
            if nxt < len(order):
                pending.append(pool.submit(shards.take, order[nxt]))
                nxt += 1
            yield batch


def evaluate_sae(params: SaeParams, x: np.ndarray, top_k: int, *, batch_size: int = 1024
                 ) -> dict[str, float]:
    """Reconstruction on ``x`` [N, d] through the inference path (normalised decoder).

    Returns:
      ``mse``, ``r2`` (1 - SSE / SST with the pooled mean, i.e. over all N rows), ``l0``.
    """
    fn = jax.jit(lambda p, xb: sae_apply(p, xb, top_k)[1:])
    sse = l0 = 0.0
    for lo in range(0, x.shape[0], batch_size):
        xb = jnp.asarray(x[lo:lo + batch_size], jnp.float32)
        codes, x_hat = fn(params, xb)
        sse += float(jnp.sum(jnp.square(xb - x_hat)))
        l0 += float(jnp.sum(jnp.abs(codes) >= L0_THRESHOLD))
    xf = np.asarray(x, np.float64)
    sst = float(np.sum(np.square(xf - xf.mean())))
    return {"mse": sse / x.size, "r2": 1.0 - sse / max(sst, 1e-30), "l0": l0 / x.shape[0]}


# ----------------------------------------------------------------------------- folders

# ----------------------------------------------------------------------------- training

@dataclasses.dataclass
class SaeTrainResult:
    params: SaeParams
    config: SaeConfig
    logs: list[dict[str, float]]
    resumed_from: int | None  # global step restored at start, None for a fresh run


def train_sae(shards, out: str | os.PathLike, *, sae_config: SaeConfig,
              train_config: SaeTrainConfig = SaeTrainConfig(), progress: bool = True,
              verbose: bool = True, log_every: int = 20) -> SaeTrainResult:
    """Trains (or resumes training of) a TopK SAE on ``shards``.

    Args:
      shards: a :class:`texter_jax.train.features.FeatureShards` (anything with ``__len__``, ``dim``
        and ``take(indices) -> float32 [M, d]``).
      out: run folder (created; resumed from its latest checkpoint if it has one).
      sae_config: SAE shape; ``input_dim`` must equal ``shards.dim``.
      train_config: hyperparameters.
      progress: show a tqdm bar per epoch.
      verbose: print the epoch logs and where a run resumed.
      log_every: steps between loss read-backs for the progress bar.

    Returns:
      SaeTrainResult with the final params (dictionary rows projected to unit norm) and
      per-epoch logs. The final params are also written to ``<out>/sae``.
    """
    cfg = train_config
    out = Path(out).absolute()
    n, d = len(shards), int(shards.dim)
    if d != sae_config.input_dim:
        raise ValueError(f"features have {d} dims, SAE input_dim is {sae_config.input_dim}")
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{n} rows is less than one batch of {cfg.batch_size}")
    aux = cfg.auxk(steps_per_epoch * cfg.batch_size)
    batch_topk = sae_config.activation == "batchtopk"
    if aux is not None and aux.k_aux > sae_config.nb_concepts:
        raise ValueError(f"aux_k {aux.k_aux} exceeds the SAE's {sae_config.nb_concepts} "
                         "latents")

    check_run_folder(out, {"format": TRAIN_FORMAT, "sae": sae_config.to_dict(),
                              "train": cfg.identity(), "data": {"rows": n, "dim": d}})

    root = jax.random.key(cfg.seed)
    k_init, k_data = jax.random.split(root)
    tx = make_optimizer(cfg)

    @jax.jit  # one compile instead of one per eager op
    def fresh_state():
        params = init_sae(k_init, sae_config)
        if cfg.tied_init:
            params = tie_decoder_to_encoder(params)
        state = {"params": params, "opt_state": tx.init(params),
                 "acc": _zero_acc(sae_config.nb_concepts),
                 "rng": jax.random.key_data(root)}
        if aux is not None:
            state.update(aux_state(sae_config.nb_concepts))
        if batch_topk:
            state.update(batch_topk_state())
        return state

    abstract = jax.eval_shape(fresh_state)
    ckpt_dir = out / CKPT_DIR
    mngr = open_checkpoints(ckpt_dir, cfg.max_to_keep)
    resumed = resume(mngr, ckpt_dir, abstract, jax.random.key_data(root))
    if resumed is None:
        state, logs = fresh_state(), []
        first_epoch, start_step, global_step, resumed_from = 0, 0, 0, None
    else:
        state, first_epoch, start_step, global_step, logs = resumed
        resumed_from = global_step
        if verbose:
            print(f"resuming from {ckpt_dir / str(global_step)} "
                  f"(epoch {first_epoch + 1}, step {start_step}/{steps_per_epoch})")

    placement = local_placement()
    if cfg.batch_size % placement.n_devices:
        raise ValueError(f"batch size {cfg.batch_size} must be a multiple of the "
                         f"{placement.n_devices} local devices the batch is split over")
    step_fn = make_train_step(tx, sae_config.top_k, placement, aux, batch_topk)

    def save(state_host, epoch_, step_in_epoch):
        if global_step in mngr.all_steps():
            return
        mngr.save(global_step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state_host),
            meta=ocp.args.JsonSave({"epoch": epoch_, "step_in_epoch": step_in_epoch,
                                    "global_step": global_step,
                                    "logs": [dict(x) for x in logs]})))

    try:
        for epoch in range(first_epoch, cfg.epochs):
            order = epoch_order(k_data, epoch, n, cfg.batch_size)
            bar = tqdm(total=steps_per_epoch, initial=start_step, disable=not progress,
                       desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step")
            batches = iterate_batches(shards, order, start_step)
            for s in range(start_step, steps_per_epoch):
                state, loss = step_fn(state, next(batches))
                global_step += 1
                bar.update(1)
                if progress and (s + 1) % log_every == 0:
                    bar.set_postfix(loss=f"{float(loss):.4g}")
                if (cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0
                        and s + 1 < steps_per_epoch):
                    save(host_copy(state), epoch, s + 1)
            bar.close()
            batches.close()
            acc = jax.device_get(state["acc"])
            k = max(int(acc.steps), 1)
            log = {"epoch": epoch + 1, "loss": float(acc.loss) / k, "r2": float(acc.r2) / k,
                   "l0": float(acc.l0) / k, "dead": 1.0 - float(np.mean(acc.alive)),
                   "steps": int(acc.steps)}
            if aux is not None:
                since = jax.device_get(state["since"])
                log["aux_loss"] = float(state["aux"]) / k
                log["dead_by_rows"] = float(np.mean(np.asarray(
                    dead_latents(since, aux.dead_after))))
                state["aux"] = jnp.zeros((), jnp.float32)
            if batch_topk:  # this epoch's mean smallest kept code
                threshold = float(state["threshold_sum"]) / max(int(state["threshold_n"]), 1)
                log["threshold"] = threshold
                state.update(batch_topk_state())
            logs.append(log)
            if verbose:
                extra = ("" if aux is None else f"  AuxK {log['aux_loss']:.4g}  dead after "
                         f"{aux.dead_after} rows {100 * log['dead_by_rows']:.1f}%")
                print(f"epoch {epoch + 1}/{cfg.epochs}: loss {log['loss']:.5g}  "
                      f"R2 {log['r2']:.4f}  L0 {log['l0']:.1f}  dead {100 * log['dead']:.1f}%"
                      + extra)
            state["acc"] = _zero_acc(sae_config.nb_concepts)
            save(host_copy(state), epoch + 1, 0)
            start_step = 0
        mngr.wait_until_finished()
    finally:
        mngr.close()

    params = host_copy(jax.jit(project_dictionary)(state["params"]))
    if batch_topk:  # inference encodes with the last epoch's threshold
        params["threshold"] = np.asarray(logs[-1]["threshold"], np.float32)
    sae_io.save(out / FINAL_DIR, sae_config, params, overwrite=True,
             extra={"logs": logs, "train": dataclasses.asdict(cfg)})
    return SaeTrainResult(params=params, config=sae_config, logs=logs,
                          resumed_from=resumed_from)
