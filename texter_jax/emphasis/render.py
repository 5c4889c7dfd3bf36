"""The MACO optimisation loop, as one ``lax.scan`` per image (vmapped for batches).

Per step (release: ``src/horama/maco_fv.py:maco`` and ``common.py:optimization_step``):

1. image = phase_to_image(phase, magnitude)             float32 [S, S, 3] in (0, 1)
2. ``n_crops`` random boxes -> crops [n, crop, crop, 3] -> + Gaussian + uniform noise
3. score = objective(crops); loss = -score
4. transparency += |d loss / d image|   (the gradient at the full canvas *after* the
   sigmoid: the release's ``img.grad`` on the preconditioner output)
5. phase <- NAdam step on d loss / d phase (torch semantics, ``nadam.py``)

The final image is rendered from the phase after the last update; ``objective_trace[t]``
is the score at step t (before that step's update). Gradients are taken w.r.t. the
image only and pulled back to the phase; model weights are never differentiated.

Release defaults: canvas 1280, 512 steps (``texter.py: num_maco_iter=512``; maco's own
default is 1000), NAdam lr 1.0, 6 crops of 224, centre std 0.15, side U[0.25, 0.30],
noise 0.05, phase std 1.0.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import Partial

from texter_jax.emphasis.crops import random_crops
from texter_jax.emphasis.nadam import torch_nadam
from texter_jax.emphasis.param import init_phase, phase_to_image, spectrum_shape
from texter_jax.config import MacoConfig
from texter_jax.emphasis.progress import _report_step
from texter_jax.types import Array, PRNGKey


class MacoResult(NamedTuple):
    """Output of :func:`maco` (add a leading [B] axis for :func:`maco_batch`).

    image: float32 [S, S, 3] in (0, 1), rendered from the final phase.
    transparency: float32 [S, S, 3] >= 0, sum over steps of |d loss / d image|.
    objective_trace: float32 [steps], the score at each step (higher is better).
    """

    image: Array
    transparency: Array
    objective_trace: Array


def _render(objective: Callable[[Array], Array], key: PRNGKey, magnitude: Array,
            config: MacoConfig) -> MacoResult:
    """One MACO run; pure and traceable. ``objective(crops) -> score`` to maximise."""
    k_init, k_loop = jax.random.split(key)
    phase = init_phase(k_init, config.canvas, config.phase_std)
    opt = torch_nadam(config.learning_rate, config.b1, config.b2, config.eps,
                      config.momentum_decay)
    magnitude = magnitude.astype(jnp.float32)

    def score_of_image(image, k):
        crops = random_crops(k, image, config.n_crops, config.crop_size,
                             centre_std=config.centre_std, side_range=config.side_range,
                             noise=config.noise, clip=config.clip_boxes)
        return objective(crops).astype(jnp.float32)

    def advance(carry, t):
        phase, opt_state, transparency = carry
        k = jax.random.fold_in(k_loop, t)
        # One forward/backward: d score / d image, then pulled back to the phase.
        image, pull_back = jax.vjp(lambda p: phase_to_image(p, magnitude), phase)
        score, g_image = jax.value_and_grad(score_of_image)(image, k)
        g_loss = -g_image  # loss = -score
        (g_phase,) = pull_back(g_loss)
        updates, opt_state = opt.update(g_phase, opt_state, phase)
        phase = optax.apply_updates(phase, updates)
        return (phase, opt_state, transparency + jnp.abs(g_loss)), score

    transparency = jnp.zeros((config.canvas, config.canvas, 3), jnp.float32)
    carry = (phase, opt.init(phase), transparency)
    if config.stop_rtol is None:
        def step(carry, t):
            jax.debug.callback(_report_step, t, True, False)  # progress; no effect on values
            return advance(carry, t)

        (phase, _, transparency), trace = jax.lax.scan(
            step, carry, jnp.arange(config.steps, dtype=jnp.int32))
    else:
        phase, transparency, trace = _run_until_converged(advance, carry, config)
    return MacoResult(phase_to_image(phase, magnitude), transparency, trace)


def _run_until_converged(advance, carry, config: MacoConfig):
    """``advance`` (one step) in windows of ``stop_window`` (a scan each) inside a while
    loop that ends at ``steps`` or at the convergence rule of :class:`MacoConfig`. Under
    ``vmap`` it runs until every image has stopped; a stopped image's state is frozen."""
    w_len = config.stop_window
    n_windows = config.steps // w_len

    def window(state):
        w, carry, trace, prev, stopped = state

        def step(carry, t):
            # Under vmap a stopped image still runs the body (its result is dropped);
            # only running images report progress.
            jax.debug.callback(_report_step, t, ~stopped, True)
            return advance(carry, t)

        ts = w * w_len + jnp.arange(w_len, dtype=jnp.int32)
        carry, scores = jax.lax.scan(step, carry, ts)
        trace = jax.lax.dynamic_update_slice(trace, scores, (w * w_len,))
        mean = jnp.mean(scores)
        done = ((w + 1) * w_len >= config.stop_min_steps) & (w > 0) & (
            mean - prev <= config.stop_rtol * jnp.abs(mean))
        return w + 1, carry, trace, mean, done

    def more(state):
        w, *_, done = state
        return (w < n_windows) & ~done

    trace = jnp.full((config.steps,), jnp.nan, jnp.float32)
    state = (jnp.int32(0), carry, trace, jnp.float32(-jnp.inf), jnp.bool_(False))
    _, (phase, _, transparency), trace, _, _ = jax.lax.while_loop(more, window, state)
    return phase, transparency, trace


def final_objective(trace) -> Array:
    """The last objective actually reached: trace [..., steps] (NaN after an early stop)
    -> [...]."""
    trace = jnp.asarray(trace)
    steps_run = jnp.sum(~jnp.isnan(trace), axis=-1)
    idx = jnp.maximum(steps_run - 1, 0)
    return jnp.take_along_axis(trace, idx[..., None], axis=-1)[..., 0]


@functools.partial(jax.jit, static_argnames=("config",))
def _maco_jit(objective, key, magnitude, config):
    return _render(objective, key, magnitude, config)


@functools.partial(jax.jit, static_argnames=("config",))
def _maco_batch_jit(objective, keys, magnitude, unit_ids, unit_mask, config):
    def one(key, ids, mask):
        return _render(lambda crops: objective(crops, ids, mask), key, magnitude, config)

    return jax.vmap(one)(keys, unit_ids, unit_mask)


def _as_pytree(fn: Callable) -> Partial:
    # A plain function becomes a leafless pytree keyed by its identity, so it can be
    # passed to the compiled loop as an argument.
    return fn if isinstance(fn, Partial) else Partial(fn)


def _check_magnitude(magnitude, config: MacoConfig) -> Array:
    magnitude = jnp.asarray(magnitude, jnp.float32)
    if magnitude.shape != spectrum_shape(config.canvas):
        raise ValueError(f"magnitude {magnitude.shape} != {spectrum_shape(config.canvas)} "
                         f"for canvas {config.canvas}")
    return magnitude


def maco(objective_fn: Callable[[Array], Array], key: PRNGKey, magnitude,
         config: MacoConfig = MacoConfig()) -> MacoResult:
    """Feature visualisation by magnitude-constrained optimisation, one image.

    Args:
      objective_fn: ``crops float32 [n_crops, crop, crop, 3] (about [0, 1]; noise may
        step outside) -> float32 scalar`` to MAXIMISE. A ``jax.tree_util.Partial``
        (e.g. from :func:`~texter_jax.emphasis.objectives.with_units`) passes its
        arrays as traced arguments; a plain function is compiled once per identity.
      key: PRNG key; the same key gives a bitwise-identical result.
      magnitude: float32 [3, S, S // 2 + 1] template (``spectrum.py``).
      config: hyperparameters (static: a new config recompiles).

    Returns:
      :class:`MacoResult` with image and transparency [S, S, 3], trace [steps].
    """
    magnitude = _check_magnitude(magnitude, config)
    return _maco_jit(_as_pytree(objective_fn), key, magnitude, config=config)


def maco_batch(objective_fn: Callable[[Array, Array, Array], Array], keys: PRNGKey,
               magnitude, config: MacoConfig, unit_ids, unit_mask=None) -> MacoResult:
    """MACO for B images at once, each with its own unit set (vmapped ``lax.scan``).

    Image b equals ``maco(with_units(objective_fn, unit_ids[b], unit_mask[b]), keys[b],
    magnitude, config)`` up to float rounding.

    Args:
      objective_fn: ``(crops [n, crop, crop, 3], unit_ids [k] int, unit_mask [k] bool)
        -> float32 scalar`` to maximise (``features_objective`` / ``sae_objective``).
      keys: B PRNG keys ([B] typed keys or [B, 2] raw uint32).
      magnitude: float32 [3, S, S // 2 + 1], shared.
      config: hyperparameters.
      unit_ids: int [B, k].
      unit_mask: bool [B, k]; None selects all k.

    Returns:
      :class:`MacoResult` with a leading [B] axis.
    """
    magnitude = _check_magnitude(magnitude, config)
    unit_ids = jnp.asarray(unit_ids, jnp.int32)
    if unit_ids.ndim != 2:
        raise ValueError(f"unit_ids must be [B, k], got {unit_ids.shape}")
    unit_mask = (jnp.ones(unit_ids.shape, bool) if unit_mask is None
                 else jnp.asarray(unit_mask, bool))
    if unit_mask.shape != unit_ids.shape:
        raise ValueError(f"unit_mask {unit_mask.shape} != unit_ids {unit_ids.shape}")
    if len(keys) != unit_ids.shape[0]:
        raise ValueError(f"{len(keys)} keys for {unit_ids.shape[0]} unit sets")
    return _maco_batch_jit(_as_pytree(objective_fn), keys, magnitude, unit_ids, unit_mask,
                           config=config)


class RetryInfo(NamedTuple):
    """Host-side record of :func:`maco_batch_with_retry`.

    n_units: int [B], units finally used per image.
    retries: int [B], extra runs per image.
    failed: bool [B], transparency still all zero after ``max_retries``.
    """

    n_units: np.ndarray
    retries: np.ndarray
    failed: np.ndarray


def maco_batch_with_retry(objective_fn, keys: PRNGKey, magnitude, config: MacoConfig,
                          ranked_ids, n_units, ranked_mask=None, *, max_retries: int = 8
                          ) -> tuple[MacoResult, RetryInfo]:
    """:func:`maco_batch` plus the release's "all-zero transparency" rule.

    The release (``texter.py:identify_influential_concepts``) loops: run MACO with the
    top ``k`` units; if the accumulated map's max is 0 (no selected unit ever had a
    gradient, e.g. TopK SAE codes that never enter the top k), set ``k += 1``, capped
    at the number of ranked units, and run again from a fresh random phase. Here the
    images needing a retry are re-run together (padded to a power-of-two batch to
    bound recompiles) with keys ``fold_in(keys[b], attempt)``; the release's loop has
    no bound, ours stops after ``max_retries`` and reports it.

    Args:
      objective_fn, keys, magnitude, config: as in :func:`maco_batch`.
      ranked_ids: int [B, R] unit ids best first (R >= the largest k wanted).
      n_units: int or int [B], the k to start with.
      ranked_mask: bool [B, R], valid ranked entries (e.g. fewer active units than R);
        None means all valid. Must be a prefix per row.
      max_retries: cap on extra runs per image.

    Returns:
      (MacoResult with a leading [B] axis, :class:`RetryInfo`).
    """
    ranked_ids = np.asarray(ranked_ids, np.int32)
    batch, width = ranked_ids.shape
    valid = (np.ones((batch, width), bool) if ranked_mask is None
             else np.asarray(ranked_mask, bool))
    available = valid.sum(axis=1)
    n = np.minimum(np.broadcast_to(np.asarray(n_units, np.int64), (batch,)), available)
    if np.any(n < 1):
        raise ValueError("every image needs at least one valid unit")
    retries = np.zeros(batch, np.int64)

    def mask_for(rows):
        return np.arange(width)[None, :] < n[rows][:, None]

    rows = np.arange(batch)
    result = maco_batch(objective_fn, keys, magnitude, config, ranked_ids,
                        mask_for(rows))
    for attempt in range(1, max_retries + 1):
        todo = np.flatnonzero(np.asarray(jnp.max(result.transparency, axis=(1, 2, 3)) <= 0))
        if todo.size == 0:
            break
        n[todo] = np.minimum(n[todo] + 1, available[todo])
        retries[todo] += 1
        bucket = min(batch, 1 << int(todo.size - 1).bit_length())
        padded = np.concatenate([todo, np.full(bucket - todo.size, todo[0])])
        sub_keys = jax.vmap(lambda k: jax.random.fold_in(k, attempt))(keys[padded])
        redo = maco_batch(objective_fn, sub_keys, magnitude, config, ranked_ids[padded],
                          mask_for(padded))
        idx = jnp.asarray(todo)
        result = jax.tree.map(lambda full, part: full.at[idx].set(part[:todo.size]),
                              result, redo)
    failed = np.asarray(jnp.max(result.transparency, axis=(1, 2, 3)) <= 0)
    return result, RetryInfo(n.astype(np.int64), retries, failed)
