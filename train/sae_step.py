"""One SAE training step: the release's loss, optimiser and epoch metrics, optionally the
AuxK loss on dead latents (:mod:`texter_jax.sae_auxk`) and BatchTopK codes
(:mod:`texter_jax.sae_batchtopk`), on one device or data parallel.

With AuxK off (the default) the step, its state and its numbers are the release's. With
AuxK on the state also holds ``"since"`` int32 [n] (rows since each latent last fired)
and ``"aux"`` float32 [] (this epoch's sum of the auxiliary loss), and the loss the
optimiser follows is ``MSE + aux_coef * L_aux``; the ``loss`` the step returns and the
epoch logs stay the MSE, so runs with and without AuxK compare directly.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from texter_jax.batching import BATCH_AXIS, Placement
from texter_jax.sae import SaeParams, project_dictionary, sae_encode, sae_pre_codes
from texter_jax.sae_auxk import AUX_COEF, auxk_row_losses, dead_latents, update_rows_since_fired
from texter_jax.sae_batchtopk import batch_topk_mask, global_batch_threshold, smallest_kept

R2_EPS = 1e-6  # overcomplete.metrics.Epsilon
L0_THRESHOLD = 1e-6  # overcomplete.metrics.l0_eps
TORCH_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_


@dataclasses.dataclass(frozen=True)
class AuxK:
    """AuxK settings: ``k_aux`` dead latents reconstruct the residual, weighted by
    ``coef``; a latent is dead after ``dead_after`` rows without firing."""

    k_aux: int
    dead_after: int
    coef: float = AUX_COEF


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


def aux_state(n: int) -> dict[str, jax.Array]:
    """The extra state entries of an AuxK run: every latent counted as just fired."""
    return {"since": jnp.zeros((n,), jnp.int32), "aux": jnp.zeros((), jnp.float32)}


def batch_topk_state() -> dict[str, jax.Array]:
    """The extra state entries of a BatchTopK run: this epoch's sum and count of the
    batches' smallest kept activations (the inference threshold is their mean)."""
    return {"threshold_sum": jnp.zeros((), jnp.float32),
            "threshold_n": jnp.zeros((), jnp.int32)}


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


def make_optimizer(cfg) -> optax.GradientTransformation:
    """torch ``Adam(lr)`` after the release's gradient clipping (``cfg``: a
    ``SaeTrainConfig``)."""
    parts = [clip_by_global_norm_torch(cfg.clip_norm)] if cfg.clip_norm else []
    return optax.chain(*parts, optax.adam(cfg.lr, b1=0.9, b2=0.999, eps=1e-8))


def _training_dictionary(params: SaeParams) -> jax.Array:
    dic = params["dictionary"]
    return dic["weights"] * jnp.exp(jax.lax.stop_gradient(dic["multiplier"]))


def release_loss(params: SaeParams, x: jax.Array, top_k: int):
    """MSE of the release's training forward (dictionary used as stored).

    Returns:
      ``(loss, (codes [B, n], x_hat [B, d]))``.
    """
    _, codes = sae_encode(params, x, top_k)
    x_hat = codes @ _training_dictionary(params)
    return jnp.mean(jnp.square(x - x_hat)), (codes, x_hat)


def batch_r2(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    """overcomplete ``r2_score``: ``1 - mean((x - x_hat)^2) / (mean((x - mean(x))^2) + eps)``."""
    return 1.0 - jnp.mean(jnp.square(x - x_hat)) / (jnp.mean(jnp.square(x - jnp.mean(x))) + R2_EPS)


def _acc_update(acc: EpochAcc, loss, r2, l0, fired) -> EpochAcc:
    return EpochAcc(loss=acc.loss + loss, r2=acc.r2 + r2, l0=acc.l0 + l0,
                    alive=jnp.maximum(acc.alive, fired.astype(jnp.int8)),
                    steps=acc.steps + 1)


def _codes(params, x, top_k, batch_topk: bool, rows: int, axis: str | None):
    """``(pre [B, n], codes [B, n])`` of the training forward: TopK per row, or the
    ``top_k * rows`` largest of the whole batch (over every device along ``axis``)."""
    if not batch_topk:
        return sae_encode(params, x, top_k)
    pre = sae_pre_codes(params, x)
    acts = jax.nn.relu(pre)
    if axis is None:
        return pre, batch_topk_mask(acts, top_k)
    theta = global_batch_threshold(jax.lax.stop_gradient(acts), top_k, rows, axis)
    return pre, jnp.where(acts >= theta, acts, jnp.zeros_like(acts))


def _sums(params, x, top_k, aux: AuxK | None, since, rows: int, batch_topk: bool = False,
          axis: str | None = None):
    """This rows' share of the loss over a batch of ``rows`` rows (``x`` may be one
    device's part): ``(objective, (mse_part, aux_part, codes, x_hat))``."""
    pre, codes = _codes(params, x, top_k, batch_topk, rows, axis)
    dictionary = _training_dictionary(params)
    x_hat = codes @ dictionary
    mse = jnp.sum(jnp.square(x - x_hat)) / (rows * x.shape[1])
    if aux is None:
        return mse, (mse, jnp.zeros((), jnp.float32), codes, x_hat)
    dead = dead_latents(since, aux.dead_after)
    aux_part = jnp.sum(auxk_row_losses(pre, x - x_hat, dictionary, dead, aux.k_aux)) / rows
    return mse + aux.coef * aux_part, (mse, aux_part, codes, x_hat)


def _finish(state, tx, params, grads, x, loss, aux_part, r2, l0, fired, aux, rows,
            batch_min=None):
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new = {"params": optax.apply_updates(params, updates), "opt_state": opt_state,
           "acc": _acc_update(state["acc"], loss, r2, l0, fired), "rng": state["rng"]}
    if aux is not None:
        new["since"] = update_rows_since_fired(state["since"], fired, rows)
        new["aux"] = state["aux"] + aux_part
    if batch_min is not None:
        new["threshold_sum"] = state["threshold_sum"] + batch_min
        new["threshold_n"] = state["threshold_n"] + 1
    return new


def make_train_step(tx: optax.GradientTransformation, top_k: int,
                    placement: Placement | None = None, aux: AuxK | None = None,
                    batch_topk: bool = False):
    """Builds the jitted step ``(state, x [B, d]) -> (state, loss)``; ``state`` is donated.

    ``state`` = ``{"params", "opt_state", "acc": EpochAcc, "rng": uint32 key data}``, plus
    :func:`aux_state`'s entries when ``aux`` is given and :func:`batch_topk_state`'s with
    ``batch_topk`` (codes: the ``top_k * B`` largest of the batch; the step sums each
    batch's smallest kept code for the inference threshold). With a ``placement`` of several
    devices the step is data parallel: ``x`` split along the batch (B a multiple of the
    device count), the state whole on every device, each device's gradient and metric
    sums added over the devices (``psum``), so the step is one device's on the whole
    batch up to float rounding. Without one (or with one device) it is the release's
    single-device step (AuxK added when asked).
    """
    if placement is not None and placement.n_devices > 1:
        return _data_parallel_step(tx, top_k, placement, aux, batch_topk)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, x):
        params = project_dictionary(state["params"])
        if aux is None and not batch_topk:  # the release's program, unchanged
            (loss, (codes, x_hat)), grads = jax.value_and_grad(
                release_loss, has_aux=True)(params, x, top_k)
            aux_part = None
        else:
            (_, (loss, aux_part, codes, x_hat)), grads = jax.value_and_grad(
                _sums, has_aux=True)(params, x, top_k, aux, state.get("since"), x.shape[0],
                                     batch_topk)
        active = jnp.abs(codes) >= L0_THRESHOLD
        l0 = jnp.mean(jnp.sum(active, axis=1).astype(jnp.float32))
        new = _finish(state, tx, params, grads, x, loss, aux_part, batch_r2(x, x_hat), l0,
                      jnp.any(codes > 0, axis=0), aux, x.shape[0],
                      smallest_kept(codes) if batch_topk else None)
        return new, loss

    return step


def _data_parallel_step(tx, top_k: int, placement: Placement, aux: AuxK | None,
                        batch_topk: bool):
    n_dev = placement.n_devices

    def local(state, x):
        rows = x.shape[0] * n_dev  # the whole batch's rows
        size = rows * x.shape[1]
        params = project_dictionary(state["params"])
        (_, (loss, aux_part, codes, _)), grads = jax.value_and_grad(_sums, has_aux=True)(
            params, x, top_k, aux, state.get("since"), rows, batch_topk, BATCH_AXIS)
        loss, aux_part, grads = jax.lax.psum((loss, aux_part, grads), BATCH_AXIS)
        # batch_r2 of the whole batch: 1 - MSE / (variance of all its entries + eps)
        mean = jax.lax.psum(jnp.sum(x), BATCH_AXIS) / size
        var = jax.lax.psum(jnp.sum(jnp.square(x - mean)), BATCH_AXIS) / size
        r2 = 1.0 - loss / (var + R2_EPS)
        active = jnp.abs(codes) >= L0_THRESHOLD
        l0 = jax.lax.psum(jnp.sum(active).astype(jnp.float32), BATCH_AXIS) / rows
        fired = jax.lax.pmax(jnp.any(codes > 0, axis=0).astype(jnp.int8), BATCH_AXIS) > 0
        batch_min = (jax.lax.pmin(smallest_kept(codes), BATCH_AXIS) if batch_topk
                     else None)
        new = _finish(state, tx, params, grads, x, loss, aux_part, r2, l0, fired, aux, rows,
                      batch_min)
        return new, loss

    step = jax.jit(placement.data_parallel(local, (False, True), out_batched=False),
                   donate_argnums=0)

    def run(state, x):
        return step(placement.put_replicated(state), placement.put_batch(x))

    run.program = step  # the jitted step, to lower for other backends
    return run
