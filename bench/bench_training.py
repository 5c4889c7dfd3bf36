"""Training throughput, JAX/Optax vs PyTorch: TopK SAE steps/s and aligner SGD epoch time.

SAE at release size (d=2048, n=16384, k=1638, batch 1024, Adam + clip 1.0, dictionary
re-projected every step) and the aligner's SGD epoch (20,000 pairs 2048 -> 512, batch 100,
momentum 0.9, weight decay 5e-4). The torch loops do the same maths as the release
(``overcomplete`` TopKSAE training forward; ``LinearRegressionSolver``), except that the
aligner's batches are taken by tensor indexing instead of a ``DataLoader`` with a worker.
Steps of the two frameworks are interleaved and the median is reported, so a noisy
neighbour hits both alike. Usage::

    .venv/bin/python bench/bench_training.py [--sae-steps 4] [--aligner-epochs 2] [--threads 2]

Not a test: numbers depend on the machine; paste them with the machine named.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def bench_sae(args, torch):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from texter_jax.sae import SaeConfig, init_sae
    from texter_jax.train.sae_train import (
        AuxK,
        SaeTrainConfig,
        _zero_acc,
        aux_state,
        batch_topk_state,
        make_optimizer,
        make_train_step,
    )

    d, n, k, bs = 2048, 16384, 1638, 1024
    cfg = SaeConfig(input_dim=d, nb_concepts=n, top_k=k)
    rng = np.random.default_rng(0)
    xs = [np.maximum(rng.normal(size=(bs, d)), 0).astype(np.float32) for _ in range(2)]

    tx = make_optimizer(SaeTrainConfig())
    params = jax.jit(init_sae, static_argnums=1)(jax.random.key(0), cfg)
    state = {"params": params, "opt_state": jax.jit(tx.init)(params), "acc": _zero_acc(n),
             "rng": jax.random.key_data(jax.random.key(0))}
    step = make_train_step(tx, k)
    xj = [jnp.asarray(x) for x in xs]
    # the same step with AuxK (k_aux = d / 2, latents dead after one batch so the loss
    # runs on every step) and with BatchTopK, each on its own copy of the state
    variants = {"auxk": (make_train_step(tx, k, aux=AuxK(d // 2, bs)), aux_state(n)),
                "batchtopk": (make_train_step(tx, k, batch_topk=True), batch_topk_state())}
    vstate = {name: {**jax.tree.map(jnp.copy, state), **extra}
              for name, (_, extra) in variants.items()}

    # torch: the release's TopKSAE forward in training mode, same init values.
    enc = torch.nn.Linear(d, n)
    dic = torch.nn.Parameter(torch.empty(n, d))
    with torch.no_grad():
        enc.weight.copy_(torch.from_numpy(np.array(params["encoder"]["kernel"]).T.copy()))
        enc.bias.copy_(torch.from_numpy(np.array(params["encoder"]["bias"])))
        dic.copy_(torch.from_numpy(np.array(params["dictionary"]["weights"])))
    tparams = list(enc.parameters()) + [dic]
    opt = torch.optim.Adam(tparams, lr=5e-4)
    xt = [torch.from_numpy(x) for x in xs]

    def torch_step(x):
        opt.zero_grad()
        with torch.no_grad():
            dic.data = dic / (torch.norm(dic, p=2, dim=1, keepdim=True) + 1e-8)
        codes = torch.relu(enc(x))
        top = torch.topk(codes, k, dim=-1)
        z = torch.zeros_like(codes).scatter(-1, top.indices, top.values)
        loss = (x - z @ dic).square().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tparams, 1.0)
        opt.step()
        return loss

    t = time.perf_counter()
    state, loss = step(state, xj[0])
    loss.block_until_ready()
    compile_s = time.perf_counter() - t
    torch_step(xt[0])
    for name, (fn, _) in variants.items():
        vstate[name], loss = fn(vstate[name], xj[0])
        loss.block_until_ready()
    jt, tt, vt = [], [], {name: [] for name in variants}
    for i in range(args.sae_steps):
        t = time.perf_counter()
        state, loss = step(state, xj[i % 2])
        loss.block_until_ready()
        jt.append(time.perf_counter() - t)
        t = time.perf_counter()
        torch_step(xt[i % 2])
        tt.append(time.perf_counter() - t)
        for name, (fn, _) in variants.items():
            t = time.perf_counter()
            vstate[name], loss = fn(vstate[name], xj[i % 2])
            loss.block_until_ready()
            vt[name].append(time.perf_counter() - t)
    return compile_s, _median(jt), _median(tt), {name: _median(v) for name, v in vt.items()}


def bench_aligner(args, torch):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from texter_jax.train.aligner import _make_epoch_fn, _schedule, sgd_optimizer

    n, d, e, bs = 20000, 2048, 512, 100
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, :e] * 0.5 + 0.1 * rng.normal(size=(n, e))).astype(np.float32)
    steps = n // bs

    tx = sgd_optimizer(_schedule("release", 0.01, steps, steps * 8))
    params = {"W": jnp.zeros((e, d)), "b": jnp.zeros((e,))}
    opt_state = tx.init(params)
    run_epoch = _make_epoch_fn(tx)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    mask = jnp.ones((steps, bs), jnp.float32)

    def jax_epoch(epoch):
        nonlocal params, opt_state
        idx = jax.random.permutation(jax.random.key(epoch), n).reshape(steps, bs)
        params, opt_state, loss = run_epoch(params, opt_state, xj, yj, idx, mask)
        loss.block_until_ready()

    model = torch.nn.Linear(d, e)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    mse = torch.nn.MSELoss()

    def torch_epoch(epoch):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        for s in range(steps):
            idx = perm[s * bs:(s + 1) * bs]
            opt.zero_grad()
            loss = mse(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()

    t = time.perf_counter()
    jax_epoch(0)
    first_s = time.perf_counter() - t
    torch_epoch(0)
    jt, tt = [], []
    for ep in range(1, args.aligner_epochs + 1):
        t = time.perf_counter()
        jax_epoch(ep)
        jt.append(time.perf_counter() - t)
        t = time.perf_counter()
        torch_epoch(ep)
        tt.append(time.perf_counter() - t)
    from texter_jax.train.aligner import fit_closed_form

    t = time.perf_counter()
    fit_closed_form(x, y)
    closed_s = time.perf_counter() - t
    return first_s, _median(jt), _median(tt), closed_s


def bench_extract(args):
    """ResNet-50 (random weights) feature extraction over generated JPEGs: images/s."""
    import tempfile
    import time
    from pathlib import Path

    import jax
    import numpy as np
    from PIL import Image

    from texter_jax.models.resnet import ResNetConfig, make_classifier, random_variables
    from texter_jax.train.features import extract_features

    clf = make_classifier(ResNetConfig.from_depth(50))
    variables = jax.tree.map(jax.numpy.asarray, random_variables(clf, 0))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        items = []
        for i in range(args.extract_images):
            p = root / "imgs" / f"{i:05d}.jpg"
            p.parent.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (300, 400, 3), np.uint8)).save(p, quality=90)
            items.append((str(p), 0))
        fn = lambda v, x: clf.features(v, x)  # noqa: E731
        # A first pass compiles; the timed pass writes a fresh folder.
        extract_features(items[:32], fn, root / "warm", preprocess="sae", batch_size=32,
                         variables=variables, progress=False)
        t = time.perf_counter()
        extract_features(items, fn, root / "feats", preprocess="sae", batch_size=32,
                         variables=variables, progress=False)
        return args.extract_images / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sae-steps", type=int, default=4)
    ap.add_argument("--aligner-epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--extract-images", type=int, default=128)
    ap.add_argument("--only", choices=["sae", "aligner", "extract"], default=None)
    args = ap.parse_args()

    import jax
    import torch

    torch.set_num_threads(args.threads)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{len(jax.devices())}; "
          f"torch {torch.__version__} threads {torch.get_num_threads()}; "
          f"cpus {os.cpu_count()}; load avg {os.getloadavg()[0]:.1f}")
    if args.only in (None, "sae"):
        c, j, t, v = bench_sae(args, torch)
        print(f"SAE step (d=2048 n=16384 k=1638 batch 1024), median of {args.sae_steps}: "
              f"jax {j:.3f} s ({1 / j:.2f} steps/s, first call incl. compile {c:.1f} s)  "
              f"torch {t:.3f} s ({1 / t:.2f} steps/s)  jax/torch time ratio {j / t:.2f}")
        print("  same run: " + "  ".join(f"{name} {s:.3f} s ({s / j:.2f}x the TopK step)"
                                        for name, s in v.items()))
    if args.only in (None, "aligner"):
        c, j, t, cf = bench_aligner(args, torch)
        print(f"aligner SGD epoch (20000 pairs 2048->512, batch 100), median of "
              f"{args.aligner_epochs}: jax {j:.3f} s (first epoch incl. compile {c:.1f} s)  "
              f"torch {t:.3f} s  torch/jax time ratio {t / j:.2f}")
        print(f"aligner closed form (float64 numpy ridge, same data): {cf:.2f} s")
    if args.only in (None, "extract"):
        ips = bench_extract(args)
        print(f"feature extraction, ResNet-50 random weights, {args.extract_images} JPEGs "
              f"400x300 -> Resize 256 + CenterCrop 224, batch 32: {ips:.1f} images/s")


if __name__ == "__main__":
    main()
