"""Flax vs PyTorch forward throughput: ResNet-50 logits and CLIP ViT-B/16 image embeddings.

Both models are randomly initialised on the torch side, converted with our converters,
and timed side by side in one run on the same inputs (fp32). Prints compile time, steady
images/s and the Flax/torch ratio. Usage::

    .venv/bin/python bench/bench_models.py [--batch 8] [--iters 5] [--threads N]

Not a test: numbers depend on the machine; paste them with the machine named.
"""

from __future__ import annotations

import argparse
import os
import time


def _time(fn, iters):
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]  # median: robust to a noisy neighbour


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--only", choices=["resnet50", "clip"], default=None)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import torchvision
    import transformers

    torch.set_num_threads(args.threads)
    from texter_jax.converters.clip import convert_hf_clip
    from texter_jax.converters.resnet import convert_torchvision_resnet
    from texter_jax.converters.state_dict import Source
    from texter_jax.models.registry import build_model

    rng = np.random.default_rng(0)
    images = rng.random((args.batch, 224, 224, 3), dtype=np.float32)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{jax.device_count()}, "
          f"torch {torch.__version__} threads={args.threads}, batch={args.batch}")
    print(f"{'model':<22}{'compile s':>10}{'flax img/s':>12}{'torch img/s':>13}{'flax/torch':>12}")

    def report(name, jax_fn, torch_fn):
        x = jnp.asarray(images)
        t0 = time.perf_counter()
        jax_fn(x).block_until_ready()
        compile_s = time.perf_counter() - t0
        j = _time(lambda: jax_fn(x).block_until_ready(), args.iters)
        with torch.inference_mode():
            torch_fn()
            t = _time(torch_fn, args.iters)
        print(f"{name:<22}{compile_s:>10.2f}{args.batch / j:>12.1f}{args.batch / t:>13.1f}"
              f"{t / j:>12.2f}")

    if args.only in (None, "resnet50"):
        torch.manual_seed(0)
        tmodel = torchvision.models.resnet50(weights=None).eval()
        conv = convert_torchvision_resnet(
            Source({k: v.numpy() for k, v in tmodel.state_dict().items()}, "resnet50"))
        model = build_model(conv.family, conv.config)
        variables = jax.tree.map(jnp.asarray, conv.variables)
        fwd = jax.jit(lambda x: model.logits(variables, x))
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        tx = (torch.from_numpy(images).permute(0, 3, 1, 2) - mean) / std
        report("resnet50 logits", fwd, lambda: tmodel(tx))

    if args.only in (None, "clip"):
        torch.manual_seed(0)
        cfg = transformers.CLIPConfig(
            text_config=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8,
                             num_hidden_layers=12, vocab_size=49408),
            vision_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                               num_hidden_layers=12, patch_size=16, image_size=224),
            projection_dim=512)
        tclip = transformers.CLIPModel(cfg).eval()
        conv = convert_hf_clip(Source({k: v.numpy() for k, v in tclip.state_dict().items()},
                                      "clip-vit-b16", cfg.to_dict()))
        clip = build_model(conv.family, conv.config)
        variables = jax.tree.map(jnp.asarray, conv.variables)
        enc = jax.jit(lambda x: clip.encode_image(variables, x))
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        tx = (torch.from_numpy(images).permute(0, 3, 1, 2) - mean) / std
        report("clip-b16 image embed", enc, lambda: tclip.get_image_features(pixel_values=tx))


if __name__ == "__main__":
    main()
