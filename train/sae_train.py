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

Data: :class:`train.features.FeatureShards` (memory-mapped), visited in a permutation
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
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from texter_jax import sae as sae_io
from texter_jax.batching import BATCH_AXIS, Placement, local_placement
from texter_jax.sae import (SaeConfig, SaeParams, init_sae, project_dictionary, sae_apply,
                            sae_encode)
from texter_jax.types import PRNGKey
from train.sae_checkpoints import (CKPT_DIR, FINAL_DIR, TRAIN_FORMAT, check_run_folder,
                                   host_copy, open_checkpoints, resume)

R2_EPS = 1e-6  # overcomplete.metrics.Epsilon
L0_THRESHOLD = 1e-6  # overcomplete.metrics.l0_eps
TORCH_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_


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
    """

    epochs: int = 10
    batch_size: int = 1024
    lr: float = 5e-4
    clip_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 1000
    max_to_keep: int = 2

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share (epochs may grow, checkpoint cadence may
        change)."""
        d = dataclasses.asdict(self)
        d.pop("epochs")
        d.pop("checkpoint_every")
        d.pop("max_to_keep")
        return d


class EpochAcc(NamedTuple):
    """Running sums over the current epoch (kept on device, checkpointed)."""

    loss: jax.Array   # float32 []
    r2: jax.Array     # float32 []
    l0: jax.Array     # float32 [], sum over steps of mean active codes per row
    alive: jax.Array  # int8 [n], 1 where a latent fired this epoch
    steps: jax.Array  # int32 []


def _zero_acc(n: int) -> EpochAcc:
    return EpochAcc(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32),
                    jnp.zeros((), jnp.float32), jnp.zeros((n,), jnp.int8),
                    jnp.zeros((), jnp.int32))


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """``torch.nn.utils.clip_grad_norm_``: scale by ``max / (norm + 1e-6)`` if below 1."""
    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        scale = jnp.minimum(1.0, max_norm / (norm + TORCH_CLIP_EPS))
        return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(cfg: SaeTrainConfig) -> optax.GradientTransformation:
    """torch ``Adam(lr)`` after the release's gradient clipping."""
    parts = [clip_by_global_norm_torch(cfg.clip_norm)] if cfg.clip_norm else []
    return optax.chain(*parts, optax.adam(cfg.lr, b1=0.9, b2=0.999, eps=1e-8))


def release_loss(params: SaeParams, x: jax.Array, top_k: int):
    """MSE of the release's training forward (dictionary used as stored, see docstring).

    Returns:
      ``(loss, (codes [B, n], x_hat [B, d]))``.
    """
    _, codes = sae_encode(params, x, top_k)
    dic = params["dictionary"]
    x_hat = codes @ (dic["weights"] * jnp.exp(jax.lax.stop_gradient(dic["multiplier"])))
    return jnp.mean(jnp.square(x - x_hat)), (codes, x_hat)


def batch_r2(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    """overcomplete ``r2_score``: ``1 - mean((x - x_hat)^2) / (mean((x - mean(x))^2) + eps)``."""
    return 1.0 - jnp.mean(jnp.square(x - x_hat)) / (jnp.mean(jnp.square(x - jnp.mean(x))) + R2_EPS)


def _acc_update(acc: EpochAcc, loss, r2, l0, fired) -> EpochAcc:
    return EpochAcc(loss=acc.loss + loss, r2=acc.r2 + r2, l0=acc.l0 + l0,
                    alive=jnp.maximum(acc.alive, fired.astype(jnp.int8)),
                    steps=acc.steps + 1)


def make_train_step(tx: optax.GradientTransformation, top_k: int,
                    placement: Placement | None = None):
    """Builds the jitted step ``(state, x [B, d]) -> (state, loss)``; ``state`` is donated.

    ``state`` = ``{"params", "opt_state", "acc": EpochAcc, "rng": uint32 key data}``.
    With a ``placement`` of several devices the step is data parallel: ``x`` split along
    the batch (B a multiple of the device count), the state whole on every device, each
    device's gradient and metric sums added over the devices (``psum``), so the step is
    one device's on the whole batch up to float rounding. Without one (or with one
    device) it is the release's single-device step.
    """
    if placement is not None and placement.n_devices > 1:
        return _data_parallel_step(tx, top_k, placement)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, x):
        params = project_dictionary(state["params"])
        (loss, (codes, x_hat)), grads = jax.value_and_grad(
            release_loss, has_aux=True)(params, x, top_k)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        params = optax.apply_updates(params, updates)
        active = jnp.abs(codes) >= L0_THRESHOLD
        acc = _acc_update(state["acc"], loss, batch_r2(x, x_hat),
                          jnp.mean(jnp.sum(active, axis=1).astype(jnp.float32)),
                          jnp.any(codes > 0, axis=0))
        return {"params": params, "opt_state": opt_state, "acc": acc,
                "rng": state["rng"]}, loss

    return step


def _data_parallel_step(tx, top_k: int, placement: Placement):
    n_dev = placement.n_devices

    def local(state, x):
        rows = x.shape[0] * n_dev  # the whole batch's rows
        size = rows * x.shape[1]
        params = project_dictionary(state["params"])

        def loss_fn(p):  # this device's share of the release's MSE over the whole batch
            _, codes = sae_encode(p, x, top_k)
            dic = p["dictionary"]
            x_hat = codes @ (dic["weights"] * jnp.exp(jax.lax.stop_gradient(
                dic["multiplier"])))
            return jnp.sum(jnp.square(x - x_hat)) / size, (codes, x_hat)

        (loss, (codes, x_hat)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        loss, grads = jax.lax.psum((loss, grads), BATCH_AXIS)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        params = optax.apply_updates(params, updates)
        # batch_r2 of the whole batch: 1 - MSE / (variance of all its entries + eps)
        mean = jax.lax.psum(jnp.sum(x), BATCH_AXIS) / size
        var = jax.lax.psum(jnp.sum(jnp.square(x - mean)), BATCH_AXIS) / size
        r2 = 1.0 - loss / (var + R2_EPS)
        active = jnp.abs(codes) >= L0_THRESHOLD
        l0 = jax.lax.psum(jnp.sum(active).astype(jnp.float32), BATCH_AXIS) / rows
        fired = jax.lax.pmax(jnp.any(codes > 0, axis=0).astype(jnp.int8), BATCH_AXIS)
        acc = _acc_update(state["acc"], loss, r2, l0, fired)
        return {"params": params, "opt_state": opt_state, "acc": acc,
                "rng": state["rng"]}, loss

    step = jax.jit(placement.data_parallel(local, (False, True), out_batched=False),
                   donate_argnums=0)

    def run(state, x):
        return step(placement.put_replicated(state), placement.put_batch(x))

    run.program = step  # the jitted step, to lower for other backends
    return run


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
      shards: a :class:`train.features.FeatureShards` (anything with ``__len__``, ``dim``
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
    check_run_folder(out, {"format": TRAIN_FORMAT, "sae": sae_config.to_dict(),
                              "train": cfg.identity(), "data": {"rows": n, "dim": d}})

    root = jax.random.key(cfg.seed)
    k_init, k_data = jax.random.split(root)
    tx = make_optimizer(cfg)

    @jax.jit  # one compile instead of one per eager op
    def fresh_state():
        params = init_sae(k_init, sae_config)
        return {"params": params, "opt_state": tx.init(params),
                "acc": _zero_acc(sae_config.nb_concepts),
                "rng": jax.random.key_data(root)}

    abstract = jax.eval_shape(fresh_state)
    ckpt_dir = out / CKPT_DIR
    mngr = open_checkpoints(ckpt_dir, cfg.max_to_keep)
    resumed = resume(mngr, ckpt_dir, abstract, jax.random.key_data(root))
    if resumed is None:
        state, logs = fresh_state(), []
        epoch, start_step, global_step, resumed_from = 0, 0, 0, None
    else:
        state, epoch, start_step, global_step, logs = resumed
        resumed_from = global_step
        if verbose:
            print(f"resuming from {ckpt_dir / str(global_step)} "
                  f"(epoch {epoch + 1}, step {start_step}/{steps_per_epoch})")

    placement = local_placement()
    if cfg.batch_size % placement.n_devices:
        raise ValueError(f"batch size {cfg.batch_size} must be a multiple of the "
                         f"{placement.n_devices} local devices the batch is split over")
    step_fn = make_train_step(tx, sae_config.top_k, placement)

    def save(state_host, epoch_, step_in_epoch):
        if global_step in mngr.all_steps():
            return
        mngr.save(global_step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state_host),
            meta=ocp.args.JsonSave({"epoch": epoch_, "step_in_epoch": step_in_epoch,
                                    "global_step": global_step,
                                    "logs": [dict(x) for x in logs]})))

    try:
        for epoch in range(epoch, cfg.epochs):
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
            logs.append(log)
            if verbose:
                print(f"epoch {epoch + 1}/{cfg.epochs}: loss {log['loss']:.5g}  "
                      f"R2 {log['r2']:.4f}  L0 {log['l0']:.1f}  dead {100 * log['dead']:.1f}%")
            state["acc"] = _zero_acc(sae_config.nb_concepts)
            save(host_copy(state), epoch + 1, 0)
            start_step = 0
        mngr.wait_until_finished()
    finally:
        mngr.close()

    params = host_copy(jax.jit(project_dictionary)(state["params"]))
    sae_io.save(out / FINAL_DIR, sae_config, params, overwrite=True,
             extra={"logs": logs, "train": dataclasses.asdict(cfg)})
    return SaeTrainResult(params=params, config=sae_config, logs=logs,
                          resumed_from=resumed_from)
