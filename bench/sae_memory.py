"""The largest TopK SAE (latents for a given input size) whose training step fits this
machine's memory at batch 1024, from the compiled step's ``memory_analysis()``.

For each input size d, latents n (multiples of 1024, k = n / 10 as the release) are
bisected: the step (Adam state, projection, clip, with and without AuxK) is compiled for
the local backend with abstract arguments, and its arguments + outputs + temporaries
(donated state counted once) must fit ``--margin`` of the memory. ``--check`` then runs one
real step at the largest size found and reports the process's peak resident memory::

    python bench/sae_memory.py [--dims 768 2048] [--margin 0.8] [--check]

Memory is what the compiler plans, not what the allocator ends up holding; --check says
how far apart they are. Not a test: the answer depends on the machine.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GIB = 2 ** 30


def _state(n: int, d: int, tx, aux):
    import jax
    import jax.numpy as jnp

    from texter_jax.sae import SaeConfig, init_sae
    from texter_jax.train.sae_train import _zero_acc, aux_state

    def make():
        params = init_sae(jax.random.key(0), SaeConfig(d, n, max(n // 10, 1)))
        state = {"params": params, "opt_state": tx.init(params), "acc": _zero_acc(n),
                 "rng": jax.random.key_data(jax.random.key(0))}
        return {**state, **aux_state(n)} if aux else state

    return make, jax.eval_shape(make), jnp


def step_bytes(n: int, d: int, batch: int, aux: bool) -> int:
    """Compiled bytes of one training step (arguments + outputs - aliased + temp)."""
    import jax

    from texter_jax.train.sae_train import AuxK, SaeTrainConfig, make_optimizer, make_train_step

    tx = make_optimizer(SaeTrainConfig())
    _, abstract, jnp = _state(n, d, tx, aux)
    step = make_train_step(tx, max(n // 10, 1), aux=AuxK(d // 2, batch) if aux else None)
    x = jax.ShapeDtypeStruct((batch, d), jnp.float32)
    m = step.lower(abstract, x).compile().memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
            + m.temp_size_in_bytes)


def largest(d: int, batch: int, budget: float, aux: bool, top: int = 1 << 20) -> tuple:
    lo, hi = 0, top // 1024  # in units of 1024 latents
    fits = {}
    while hi - lo > 1:
        mid = (lo + hi) // 2
        b = step_bytes(mid * 1024, d, batch, aux)
        fits[mid] = b
        lo, hi = (mid, hi) if b <= budget else (lo, mid)
    return lo * 1024, fits.get(lo, 0)


def check(n: int, d: int, batch: int, aux: bool) -> tuple[float, float]:
    """One real step at (n, d): (seconds, peak RSS GiB of this process)."""
    import jax
    import numpy as np

    from texter_jax.train.sae_train import AuxK, SaeTrainConfig, make_optimizer, make_train_step

    tx = make_optimizer(SaeTrainConfig())
    make, _, jnp = _state(n, d, tx, aux)
    state = jax.jit(make)()
    step = make_train_step(tx, max(n // 10, 1), aux=AuxK(d // 2, batch) if aux else None)
    x = jnp.asarray(np.maximum(np.random.default_rng(0).normal(size=(batch, d)), 0),
                    jnp.float32)
    t = time.perf_counter()
    state, loss = step(state, x)
    loss.block_until_ready()
    return time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main() -> None:
    import os

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[768, 2048])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--margin", type=float, default=0.8)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    budget = args.margin * total
    print(f"memory {total / GIB:.1f} GiB, budget {budget / GIB:.1f} GiB "
          f"({args.margin:.0%}), batch {args.batch}")
    for d in args.dims:
        for aux in (False, True):
            n, b = largest(d, args.batch, budget, aux)
            line = (f"d={d} {'AuxK' if aux else 'TopK'}: largest n = {n} (x{n / d:.0f}), "
                    f"compiled step {b / GIB:.2f} GiB")
            if args.check and n and not aux:
                s, rss = check(n, d, args.batch, aux)
                line += f"; one real step {s:.1f} s, peak RSS {rss:.2f} GiB"
            print(line, flush=True)


if __name__ == "__main__":
    main()
