"""A batch over this process's devices: pad to a multiple of the device count, shard
axis 0 over ``jax.local_devices()`` (under ``jax.distributed`` the global device list
holds other processes' devices; see :mod:`texter_jax.distributed`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def batch_sharding(batch: int):
    """NamedSharding splitting axis 0 over all devices, or None with one device.

    ``batch`` must be a multiple of the device count (callers pad).
    """
    devices = jax.local_devices()  # this process's own (several processes: see distributed.py)
    if len(devices) == 1:
        return None
    if batch % len(devices):
        raise ValueError(f"batch {batch} is not a multiple of {len(devices)} devices; pad it")
    mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))


def shard(x, sharding):
    return x if sharding is None else jax.device_put(x, sharding)


def pad_batch(x, n_devices: int | None = None):
    """Pads axis 0 to a multiple of the device count by repeating the last row."""
    n = x.shape[0]
    d = n_devices or jax.local_device_count()
    padded = -(-n // d) * d
    if padded == n:
        return x, n
    pad = jnp.repeat(x[-1:], padded - n, axis=0) if isinstance(x, jax.Array) else \
        np.repeat(x[-1:], padded - n, axis=0)
    return (jnp.concatenate([x, pad]) if isinstance(x, jax.Array)
            else np.concatenate([x, pad], axis=0)), n
