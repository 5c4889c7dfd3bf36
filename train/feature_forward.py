"""Device side of feature extraction: one jitted forward at a fixed batch size.

Images are shipped as uint8 and converted to float32 [0, 1] on device; optionally the
batch axis is sharded over ``jax.local_devices()``. JAX is imported on first use, so
importing the feature pipeline (e.g. to build the CLI) does not load it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def make_forward(features_fn: Callable, batch_size: int, *, variables: Any = None,
                 shard: bool = False):
    """Jits ``uint8 [B, S, S, 3] -> features_fn(float32 in [0, 1]) -> [B, D]``.

    Args:
      features_fn: ``fn(images)`` or, when ``variables`` is given,
        ``fn(variables, images)`` (variables then enter the jit as an argument instead of
        being baked into the program as constants).
      batch_size: the fixed batch size (checked against the device count when sharding).
      shard: with several devices, split inputs and outputs over a 1-D mesh of
        ``jax.local_devices()`` on the batch axis (variables replicated).

    Returns:
      ``forward(x_device) -> [B, D]`` and ``put(x_host) -> x_device`` (right sharding).
    """
    import jax
    import jax.numpy as jnp

    def fwd(v, x_u8):
        x = x_u8.astype(jnp.float32) / 255.0
        return features_fn(x) if v is None else features_fn(v, x)

    devices = jax.local_devices()  # this process's own (several processes: see distributed.py)
    if shard and len(devices) > 1:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

        if batch_size % len(devices):
            raise ValueError(f"batch size {batch_size} must be a multiple of the "
                             f"{len(devices)} devices to shard the batch axis")
        mesh = Mesh(np.asarray(devices), ("batch",))
        batch_sh, repl = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
        v_dev = None if variables is None else jax.device_put(variables, repl)
        jitted = jax.jit(fwd, in_shardings=(repl, batch_sh), out_shardings=batch_sh)
        return (lambda x: jitted(v_dev, x)), (lambda x: jax.device_put(x, batch_sh))
    v_dev = None if variables is None else jax.device_put(variables)
    jitted = jax.jit(fwd)
    return (lambda x: jitted(v_dev, x)), jnp.asarray
