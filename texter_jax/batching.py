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


def pad_rows(x, n: int):
    """Pads axis 0 to ``n`` rows by repeating the last row (a no-op at >= n rows).

    Repeating a real row, not zeros, keeps padded rows valid inputs (no NaN from an
    all-zero image through a normalisation, no empty-text edge case).
    """
    if x.shape[0] >= n:
        return x
    if isinstance(x, jax.Array):
        return jnp.concatenate([x, jnp.repeat(x[-1:], n - x.shape[0], axis=0)])
    return np.concatenate([x, np.repeat(x[-1:], n - x.shape[0], axis=0)], axis=0)


def pad_to_multiple(x, multiple: int):
    """(x padded along axis 0 to a multiple of ``multiple``, the real row count)."""
    n = x.shape[0]
    return pad_rows(x, -(-n // multiple) * multiple), n


def pad_batch(x, n_devices: int | None = None):
    """Pads axis 0 to a multiple of the device count by repeating the last row."""
    return pad_to_multiple(x, n_devices or jax.local_device_count())


def map_in_batches(fn, x, batch: int = 256) -> np.ndarray:
    """``fn`` over fixed-size chunks of axis 0 (the last one padded), so a jitted ``fn``
    compiles once; returns the real rows' outputs concatenated, as numpy."""
    out = []
    for s in range(0, len(x), batch):
        chunk = x[s:s + batch]
        out.append(np.asarray(fn(pad_rows(chunk, batch)))[:len(chunk)])
    return np.concatenate(out)
