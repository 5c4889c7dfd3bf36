"""Where a batched program's arrays live, and the helpers that pad batches.

A :class:`Placement` is a 1-D mesh with axis ``"batch"``: the batch axis of every
stage's inputs and outputs is split over its devices, everything else (weights, the
MACO template, text embeddings) is replicated. :func:`local_placement` spans
``jax.local_devices()``: under ``jax.distributed`` the global device list holds other
processes' devices (see :mod:`texter_jax.distributed`). The planner builds the same
object over a TPU topology's devices, so it compiles the programs ``explain`` runs.

:func:`host_read` is the one sanctioned device -> host read of the stages: it lifts a
``jax.transfer_guard_device_to_host("disallow")`` for exactly that read, so a test can
run the pipeline under the guard and any other read fails.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


@dataclasses.dataclass(frozen=True)
class Placement:
    """A batch split over ``mesh``'s ``"batch"`` axis; everything else replicated."""

    mesh: Mesh

    @property
    def n_devices(self) -> int:
        return self.mesh.size

    @property
    def batch(self) -> NamedSharding:
        """Axis 0 split over the devices."""
        return NamedSharding(self.mesh, PartitionSpec(BATCH_AXIS))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def put_batch(self, tree):
        """``device_put`` every leaf split along axis 0 (a multiple of the device count)."""
        for leaf in jax.tree.leaves(tree):
            if np.shape(leaf)[0] % self.n_devices:
                raise ValueError(f"batch {np.shape(leaf)[0]} is not a multiple of "
                                 f"{self.n_devices} devices; pad it (pad_batch)")
        return jax.device_put(tree, self.batch)

    def put_replicated(self, tree):
        """``device_put`` every leaf whole onto every device (a no-op when already there)."""
        return jax.device_put(tree, self.replicated)

    def pad(self, x):
        """``(x padded along axis 0 to a multiple of the device count, real rows)``."""
        return pad_to_multiple(x, self.n_devices)

    def data_parallel(self, fn, batched: tuple[bool, ...], *, out_batched: bool = True):
        """``fn`` run on each device's share of the batch (``jax.shard_map``).

        Positional argument i is split along axis 0 when ``batched[i]``, else passed
        whole (weights); every output is split along axis 0, or, with ``out_batched``
        False, is the same on every device (``fn`` reduces over the ``"batch"`` axis
        itself, e.g. ``lax.psum`` of gradients). Inside, ``fn`` sees the per-device
        batch and runs as on one device: the compiled program holds no collective but
        the ones ``fn`` asks for, whatever ops it uses (the compiler's automatic
        partitioning gathers the batch around ops it cannot split, such as TopK and
        FFTs).
        """
        specs = tuple(PartitionSpec(BATCH_AXIS) if b else PartitionSpec() for b in batched)
        # check_vma off: fn is written for one device (scan carries start replicated and
        # become per-device values), and every output is per-device by construction.
        out = PartitionSpec(BATCH_AXIS) if out_batched else PartitionSpec()
        return jax.shard_map(fn, mesh=self.mesh, in_specs=specs, out_specs=out,
                             check_vma=False)

    def round_up(self, n: int) -> int:
        """The smallest multiple of the device count >= n."""
        return -(-n // self.n_devices) * self.n_devices


@functools.cache
def _placement_of(devices: tuple) -> Placement:
    return Placement(Mesh(np.asarray(devices), (BATCH_AXIS,)))


def local_placement() -> Placement:
    """The placement over this process's devices (one mesh per device set, cached)."""
    return _placement_of(tuple(jax.local_devices()))


def placement_over(devices) -> Placement:
    """A placement over given devices (e.g. a TPU topology's, for compiling a plan)."""
    return _placement_of(tuple(devices))


def split_program(fn, batched: tuple[bool, ...], *, static_argnames: tuple[str, ...] = ()):
    """A program factory for data-parallel batch functions: ``factory(placement)`` is
    ``jax.jit`` of ``fn`` run per device (:meth:`Placement.data_parallel`), built once
    per placement.

    ``fn(*arrays, **static)``: positional array arguments, split along axis 0 where
    ``batched[i]``, whole otherwise; keyword arguments named in ``static_argnames`` are
    compile-time constants (a model, sizes). Every output is split along axis 0.

    >>> import jax.numpy as jnp
    >>> scale = split_program(lambda w, x, *, power: (x * w) ** power, (False, True),
    ...                       static_argnames=("power",))
    >>> scale(local_placement())(jnp.float32(2.0), jnp.arange(4.0), power=2).tolist()
    [0.0, 4.0, 16.0, 36.0]
    """
    @functools.cache
    def factory(placement: Placement):
        def program(*arrays, **static):
            local = functools.partial(fn, **static) if static else fn
            return placement.data_parallel(local, batched)(*arrays)

        return jax.jit(program, static_argnames=static_argnames)

    factory.batched = tuple(batched)
    return factory


def run_split(factory, *arrays, placement: Placement | None = None, **static):
    """One call of a :func:`split_program` from host code: the batched arrays padded to a
    multiple of the device count and split, the others placed whole, the outputs read
    back (numpy, the real rows only)."""
    placement = placement or local_placement()
    batched = factory.batched
    rows = next(np.shape(a)[0] for a, b in zip(arrays, batched, strict=True) if b)
    placed = [placement.put_batch(placement.pad(jnp.asarray(a))[0]) if b
              else placement.put_replicated(a) for a, b in zip(arrays, batched, strict=True)]
    out = factory(placement)(*placed, **static)
    return jax.tree.map(lambda x: x[:rows], host_read(out))


def host_read(tree):
    """Device -> host copy of a pytree (numpy leaves; None stays None): the stages' only
    read of device results, allowed even under a device-to-host transfer guard."""
    with jax.transfer_guard_device_to_host("allow"):
        return jax.tree.map(np.asarray, tree)


def batch_sharding(batch: int):
    """NamedSharding splitting axis 0 over all local devices, or None with one device.

    ``batch`` must be a multiple of the device count (callers pad).
    """
    placement = local_placement()
    if placement.n_devices == 1:
        return None
    if batch % placement.n_devices:
        raise ValueError(f"batch {batch} is not a multiple of {placement.n_devices} "
                         "devices; pad it")
    return placement.batch


def shard(x, sharding):
    return x if sharding is None else jax.device_put(x, sharding)


def pad_rows(x, n: int):
    """Pads axis 0 to ``n`` rows by repeating the last row (a no-op at >= n rows).

    Repeating a real row, not zeros, keeps padded rows valid inputs (no NaN from an
    all-zero image through a normalisation, no empty-text edge case). Device arrays
    are padded on device.
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
