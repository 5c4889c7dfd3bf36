"""MACO, the release's feature visualisation: one image (:func:`maco`) or a batch with
a unit set per image (:func:`maco_batch`), and the batched program split over devices.

The loop itself is :mod:`texter_jax.emphasis.loop`. Release defaults: canvas 1280, 512
steps (``texter.py: num_maco_iter=512``; maco's own default is 1000), NAdam lr 1.0, 6
crops at the classifier's input size (224 there), centre std 0.15, side U[0.25, 0.30],
noise 0.05, phase std 1.0.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from texter_jax.batching import Placement, split_program
from texter_jax.config import MacoConfig
from texter_jax.emphasis.loop import MacoResult, render_batch
from texter_jax.emphasis.param import spectrum_shape
from texter_jax.emphasis.progress import listening, report_every
from texter_jax.types import Array, PRNGKey

__all__ = ["MacoConfig", "MacoResult", "final_objective", "maco", "maco_batch",
           "maco_batch_program"]


def final_objective(trace) -> Array:
    """The last objective actually reached: trace [..., steps] (NaN after an early stop)
    -> [...]."""
    trace = jnp.asarray(trace)
    steps_run = jnp.sum(~jnp.isnan(trace), axis=-1)
    idx = jnp.maximum(steps_run - 1, 0)
    return jnp.take_along_axis(trace, idx[..., None], axis=-1)[..., 0]


@functools.partial(jax.jit, static_argnames=("config", "every"))
def _maco_jit(objective, key, magnitude, token, config, every):
    one = render_batch(lambda crops: objective(crops), key[None], magnitude, config,
                       every=every, token=token)
    return jax.tree.map(lambda x: x[0], one)


def _maco_batch(objective, keys, magnitude, unit_ids, unit_mask, token, *, config, every,
                unroll=False):
    return render_batch(objective, keys, magnitude, config, (unit_ids, unit_mask),
                        every=every, token=token, unroll=unroll)


_maco_batch_jit = jax.jit(_maco_batch, static_argnames=("config", "every", "unroll"))

# Per device: its share of keys, unit ids and masks; the objective (its weights), the
# template and the progress token whole. The result stays split (stage 3 reads it
# where it is).
maco_batch_program = split_program(_maco_batch, (False, True, False, True, True, False),
                                   static_argnames=("config", "every", "unroll"))
maco_batch_program.__doc__ = """The batched MACO loop for a placement: ``program(objective,
keys [B], magnitude, unit_ids [B, k], unit_mask [B, k], token, *, config, every,
unroll=False) -> MacoResult`` (see :func:`maco_batch`); ``.lower`` it with abstract
arguments to compile for another backend (:mod:`texter_jax.plan`; ``unroll`` writes the
steps out for its cost figures)."""


def _as_pytree(fn: Callable) -> Partial:
    # A plain function becomes a leafless pytree keyed by its identity, so it can be
    # passed to the compiled loop as an argument.
    return fn if isinstance(fn, Partial) else Partial(fn)


def _check_magnitude(magnitude, config: MacoConfig) -> Array:
    if tuple(magnitude.shape) != spectrum_shape(config.canvas):
        raise ValueError(f"magnitude {tuple(magnitude.shape)} != "
                         f"{spectrum_shape(config.canvas)} for canvas {config.canvas}")
    return jnp.asarray(magnitude, jnp.float32)


def maco(objective_fn: Callable[[Array], Array], key: PRNGKey, magnitude,
         config: MacoConfig = MacoConfig(), *, progress: Callable[[int], None] | None = None,
         progress_every: int | None = None) -> MacoResult:
    """Feature visualisation by magnitude-constrained optimisation, one image.

    Args:
      objective_fn: ``crops float32 [n_crops, crop, crop, 3] (about [0, 1]; noise may
        step outside) -> float32 scalar`` to MAXIMISE. A ``jax.tree_util.Partial``
        (e.g. from :func:`~texter_jax.emphasis.objectives.with_units`) passes its
        arrays as traced arguments; a plain function is compiled once per identity.
      key: PRNG key; the same key gives a bitwise-identical result.
      magnitude: float32 [3, S, S // 2 + 1] template (``spectrum.py``).
      config: hyperparameters (static: a new config recompiles).
      progress: ``listener(steps_done)``, called every ``progress_every`` steps
        (default: :func:`~texter_jax.emphasis.progress.report_every`). None (default)
        compiles a loop that never talks to the host.

    Returns:
      :class:`MacoResult` with image and transparency [S, S, 3], trace [steps].
    """
    magnitude = _check_magnitude(magnitude, config)
    every = 0 if progress is None else report_every(config.steps, progress_every)
    with listening(progress) as token:
        return _maco_jit(_as_pytree(objective_fn), key, magnitude, jnp.int32(token),
                         config=config, every=every)


def maco_batch(objective_fn: Callable[[Array, Array, Array], Array], keys: PRNGKey,
               magnitude, config: MacoConfig, unit_ids, unit_mask=None, *,
               placement: Placement | None = None,
               progress: Callable[[int], None] | None = None,
               progress_every: int | None = None) -> MacoResult:
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
      placement: split the batch over these devices (B a multiple of their count;
        :func:`~texter_jax.batching.local_placement` for this process's); None runs
        where the inputs are.
      progress, progress_every: as in :func:`maco`.

    Returns:
      :class:`MacoResult` with a leading [B] axis (split as ``placement`` says).
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
    every = 0 if progress is None else report_every(config.steps, progress_every)
    objective = _as_pytree(objective_fn)
    with listening(progress) as token:
        if placement is None:
            return _maco_batch_jit(objective, keys, magnitude, unit_ids, unit_mask,
                                   jnp.int32(token), config=config, every=every)
        keys, unit_ids, unit_mask = placement.put_batch((keys, unit_ids, unit_mask))
        objective, magnitude, token = placement.put_replicated(
            (objective, magnitude, jnp.int32(token)))
        return maco_batch_program(placement)(objective, keys, magnitude, unit_ids,
                                             unit_mask, token, config=config, every=every)
