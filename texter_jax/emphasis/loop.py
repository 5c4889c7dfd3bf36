"""MACO's optimisation loop for a batch of B images (pure, traceable).

Per step (release: ``src/horama/maco_fv.py:maco`` and ``common.py:optimization_step``),
for every image at once:

1. image = phase_to_image(phase, magnitude)             float32 [S, S, 3] in (0, 1)
2. ``n_crops`` random boxes -> crops [n, crop, crop, 3] -> + Gaussian + uniform noise
3. score = objective(crops); loss = -score
4. transparency += |d loss / d image|   (the gradient at the full canvas *after* the
   sigmoid: the release's ``img.grad`` on the preconditioner output)
5. phase <- NAdam step on d loss / d phase (torch semantics, ``nadam.py``)

The step is vmapped over the images and the loop runs outside the vmap, so a progress
report is one host call per window for the whole batch, not one per image. The final
image is rendered from the phase after the last update; ``objective_trace[b, t]`` is
image b's score at step t (before that step's update). Gradients are taken w.r.t. the
image only and pulled back to the phase; model weights are never differentiated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from texter_jax.config import MacoConfig
from texter_jax.emphasis.crops import random_crops
from texter_jax.emphasis.nadam import torch_nadam
from texter_jax.emphasis.param import init_phase, phase_to_image
from texter_jax.emphasis.progress import report
from texter_jax.types import Array, PRNGKey


class MacoResult(NamedTuple):
    """Output of :func:`~texter_jax.emphasis.render.maco` (with a leading [B] axis for
    :func:`~texter_jax.emphasis.render.maco_batch`).

    image: float32 [S, S, 3] in (0, 1), rendered from the final phase.
    transparency: float32 [S, S, 3] >= 0, sum over steps of |d loss / d image|.
    objective_trace: float32 [steps], the score at each step (higher is better).
    """

    image: Array
    transparency: Array
    objective_trace: Array


def render_batch(objective: Callable[..., Array], keys: PRNGKey, magnitude: Array,
                 config: MacoConfig, unit_args: tuple = (), *, every: int = 0,
                 token: Any = 0, unroll: bool = False) -> MacoResult:
    """B MACO runs in one loop.

    Args:
      objective: ``(crops [n, crop, crop, 3], *unit_args_b) -> float32 score`` for one
        image, to maximise.
      keys: [B] PRNG keys (phase and crops of image b from ``keys[b]`` alone).
      magnitude: float32 [3, S, S // 2 + 1], shared.
      unit_args: arrays with a leading [B] axis passed to ``objective`` row by row.
      every: static; 0 compiles no host callback, N reports to ``token``'s listener
        every N steps (:mod:`~texter_jax.emphasis.progress`).
      unroll: static; write the steps out instead of looping (the compiler's cost
        model counts a loop's body once: :mod:`texter_jax.plan` compiles 1 and 2 steps
        this way to price a step).

    Returns:
      :class:`MacoResult` with a leading [B] axis.
    """
    if config.crop_size is None:
        raise ValueError("MACO: MacoConfig.crop_size is None (explain_batch fills in the "
                         "classifier's image_size); calling maco / maco_batch directly, pass "
                         "MacoConfig(crop_size=<the model's input side>) or "
                         "config.for_image_size(classifier.image_size)")
    opt = torch_nadam(config.learning_rate, config.b1, config.b2, config.eps,
                      config.momentum_decay)
    magnitude = magnitude.astype(jnp.float32)

    def init(key):
        k_init, k_loop = jax.random.split(key)
        phase = init_phase(k_init, config.canvas, config.phase_std)
        transparency = jnp.zeros((config.canvas, config.canvas, 3), jnp.float32)
        return (phase, opt.init(phase), transparency), k_loop

    def advance_one(carry, k_loop, args, t):
        phase, opt_state, transparency = carry

        def score_of_image(image):
            crops = random_crops(jax.random.fold_in(k_loop, t), image, config.n_crops,
                                 config.crop_size, centre_std=config.centre_std,
                                 side_range=config.side_range, noise=config.noise,
                                 clip=config.clip_boxes)
            return objective(crops, *args).astype(jnp.float32)

        # One forward/backward: d score / d image, then pulled back to the phase.
        image, pull_back = jax.vjp(lambda p: phase_to_image(p, magnitude), phase)
        score, g_image = jax.value_and_grad(score_of_image)(image)
        g_loss = -g_image  # loss = -score
        (g_phase,) = pull_back(g_loss)
        updates, opt_state = opt.update(g_phase, opt_state, phase)
        phase = optax.apply_updates(phase, updates)
        return (phase, opt_state, transparency + jnp.abs(g_loss)), score

    carry, k_loops = jax.vmap(init)(keys)

    def advance(carry, t):  # all B images, one step: scores [B]
        return jax.vmap(advance_one, in_axes=(0, 0, 0, None))(carry, k_loops, unit_args, t)

    if config.stop_rtol is None:
        carry, trace = _run_steps(advance, carry, config.steps, every, token, unroll)
    else:
        carry, trace = _run_until_converged(advance, carry, config, every, token, unroll)
    phase, _, transparency = carry
    return MacoResult(jax.vmap(lambda p: phase_to_image(p, magnitude))(phase), transparency,
                      trace)


def _run_steps(advance, carry, steps: int, every: int, token, unroll: bool = False):
    """``steps`` calls of ``advance`` as one scan, or, with ``every`` > 0, as windows of
    ``every`` steps (a scan each) with one report after each. Trace [B, steps]."""
    if every == 0 or unroll:
        carry, scores = jax.lax.scan(advance, carry, jnp.arange(steps, dtype=jnp.int32),
                                     unroll=steps if unroll else 1)
        return carry, scores.T
    n_windows, rest = divmod(steps, every)

    def window(carry, w):
        carry, scores = jax.lax.scan(
            advance, carry, w * every + jnp.arange(every, dtype=jnp.int32))
        report(token, (w + 1) * every, scores[-1])
        return carry, scores

    carry, scores = jax.lax.scan(window, carry, jnp.arange(n_windows, dtype=jnp.int32))
    trace = scores.reshape((n_windows * every, -1))
    if rest:
        carry, tail = jax.lax.scan(
            advance, carry, n_windows * every + jnp.arange(rest, dtype=jnp.int32))
        report(token, steps, tail[-1])
        trace = jnp.concatenate([trace, tail])
    return carry, trace.T


def _run_until_converged(advance, carry, config: MacoConfig, every: int, token,
                         unroll: bool = False):
    """``advance`` in windows of ``stop_window`` steps (a scan each) inside a while loop
    that ends at ``steps`` or when every image has met the convergence rule of
    :class:`MacoConfig`; an image that has stopped keeps its state (and NaN in its
    trace) while the others run on. With ``every`` > 0 it reports after each window."""
    w_len = config.stop_window
    n_windows = config.steps // w_len
    batch = jax.tree.leaves(carry)[0].shape[0]

    def window(state):
        w, carry, trace, prev, stopped = state
        ts = w * w_len + jnp.arange(w_len, dtype=jnp.int32)
        new_carry, scores = jax.lax.scan(advance, carry, ts,  # scores [w_len, B]
                                         unroll=w_len if unroll else 1)

        def keep(new, old):
            return jnp.where(stopped.reshape((-1,) + (1,) * (new.ndim - 1)), old, new)

        carry = jax.tree.map(keep, new_carry, carry)
        trace = keep(jax.lax.dynamic_update_slice(trace, scores.T, (0, w * w_len)), trace)
        if every:
            report(token, (w + 1) * w_len, scores[-1], ~stopped)
        mean = jnp.mean(scores, axis=0)
        done = ((w + 1) * w_len >= config.stop_min_steps) & (w > 0) & (
            mean - prev <= config.stop_rtol * jnp.abs(mean))
        return w + 1, carry, trace, jnp.where(stopped, prev, mean), stopped | done

    def more(state):
        w, *_, stopped = state
        return (w < n_windows) & ~jnp.all(stopped)

    trace = jnp.full((batch, config.steps), jnp.nan, jnp.float32)
    state = (jnp.int32(0), carry, trace, jnp.full((batch,), -jnp.inf, jnp.float32),
             jnp.zeros((batch,), bool))
    _, carry, trace, _, _ = jax.lax.while_loop(more, window, state)
    return carry, trace
