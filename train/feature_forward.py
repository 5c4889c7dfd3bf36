"""Device side of feature extraction: one jitted forward at a fixed batch size.

Images are shipped as uint8 and converted to float32 [0, 1] on device; optionally the
batch axis is sharded over ``jax.local_devices()``. JAX is imported on first use, so
importing the feature pipeline (e.g. to build the CLI) does not load it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def make_forward(features_fn: Callable, batch_size: int, *, variables: Any = None,
                 shard: bool = False):
    """Jits ``uint8 [B, S, S, 3] -> features_fn(float32 in [0, 1]) -> [B, D]``.

    Args:
      features_fn: ``fn(images)`` or, when ``variables`` is given,
        ``fn(variables, images)`` (variables then enter the jit as an argument instead of
        being baked into the program as constants).
      batch_size: the fixed batch size (checked against the device count when sharding).
      shard: with several devices, split inputs and outputs over
        ``jax.local_devices()`` on the batch axis, each device running its share
        (variables replicated).

    Returns:
      ``forward(x_device) -> [B, D]`` and ``put(x_host) -> x_device`` (right sharding).
    """
    import jax
    import jax.numpy as jnp

    from texter_jax.batching import local_placement, placement_over

    def fwd(v, x_u8):
        x = x_u8.astype(jnp.float32) / 255.0
        return features_fn(x) if v is None else features_fn(v, x)

    placement = local_placement()
    if not shard or placement.n_devices == 1:
        placement = placement_over(jax.local_devices()[:1])
    elif batch_size % placement.n_devices:
        raise ValueError(f"batch size {batch_size} must be a multiple of the "
                         f"{placement.n_devices} devices to shard the batch axis")
    # Each device runs its share of the batch (no collective); variables whole on each.
    jitted = jax.jit(placement.data_parallel(fwd, (False, True)))
    v_dev = None if variables is None else placement.put_replicated(variables)
    return (lambda x: jitted(v_dev, x)), placement.put_batch
