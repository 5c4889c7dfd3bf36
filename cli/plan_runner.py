"""``texter plan``'s work: build the spec, compile per target, batch and dtype, print."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from texter_jax.config import ExplainConfig, MacoConfig
from texter_jax.plan.chips import GIB


class PlanError(ValueError):
    """A bad combination of plan arguments (one line for the user)."""


def _classifier(name: str):
    from texter_jax.io.checkpoints import CONFIG_NAME
    from texter_jax.models.registry import abstract_variables, build_model
    from texter_jax.models.zoo import NAMES, zoo_spec

    path = Path(name)
    if (path / CONFIG_NAME).is_file():
        meta = json.loads((path / CONFIG_NAME).read_text())
        family, config = meta["family"], meta["config"]
    elif name in NAMES:
        family, config = zoo_spec(name)
    else:
        raise PlanError(f"--classifier {name!r} is neither a zoo name ({', '.join(NAMES)}) "
                        f"nor a folder holding {CONFIG_NAME}")
    clf = build_model(family, config)
    if not hasattr(clf, "feature_dim"):
        raise PlanError(f"--classifier {name}: family {family!r} is not a classifier")
    return clf, abstract_variables(clf)


def build_spec(args, dtype: str):
    from texter_jax.plan import ExplainSpec
    from texter_jax.sae import SaeConfig

    clf, variables = _classifier(args.classifier)
    maco = dataclasses.replace(MacoConfig(), steps=args.steps, canvas=args.canvas,
                               n_crops=args.crops, crop_size=clf.image_size)
    config = ExplainConfig(maco=maco, map_crops=args.map_crops, ig_steps=args.ig_steps,
                           use_sae=not args.no_sae,
                           compute_dtype=None if dtype == "float32" else dtype)
    sae = None if args.no_sae else SaeConfig.release_default(clf.feature_dim,
                                                             args.sae_expansion)
    return ExplainSpec(clf, variables, config, sae, args.clip_dim, args.texts)


def _gib(x) -> str:
    return "-" if x is None else f"{x / GIB:.2f}"


def _row(plan, note: str = "") -> str:
    big = max(plan.memory.values(), key=lambda f: f.peak)
    per = plan.per_image
    step = plan.maco_step.scaled(1.0 / plan.batch)
    ipm = plan.images_per_minute_per_device
    fits = {True: "yes", False: "NO", None: "?"}[plan.fits]
    transfers = sum(f.host_transfers for f in plan.memory.values())
    coll = sum(sum(f.collectives.values()) for f in plan.memory.values())
    return (f"{plan.target:>10} {plan.dtype:>8} {plan.batch:>5}{note:1} "
            f"{_gib(plan.peak_bytes):>7} {fits:>4} {big.program:>7} {_gib(big.argument):>6} "
            f"{_gib(big.temp):>6} {per.flops / 1e9:>9.0f} {per.bytes / 1e9:>8.1f} "
            f"{step.flops / 1e9:>7.1f} {step.bytes / 1e9:>7.2f} "
            f"{'-' if not plan.seconds else f'{plan.seconds / plan.batch:.2f}':>7} "
            f"{'-' if ipm is None else f'{ipm:.1f}':>8} "
            f"{'-' if plan.images_per_minute is None else f'{plan.images_per_minute:.0f}':>9} "
            f"{transfers:>4} {coll:>4}")


HEADER = (f"{'target':>10} {'dtype':>8} {'batch':>5}  {'GiB/dev':>7} {'fits':>4} "
          f"{'largest':>7} {'args':>6} {'temp':>6} {'GFLOP/im':>9} {'GB/im':>8} "
          f"{'step GF':>7} {'step GB':>7} {'s/im':>7} {'im/min/d':>8} {'im/min':>9} "
          f"{'host':>4} {'coll':>4}")


def run_plan(args) -> int:
    from texter_jax.plan import (
        DoesNotFit,
        TargetError,
        largest_batch,
        local_target,
        plan_explain,
        quiet_libtpu,
        tpu_target,
    )

    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in ("float32", "bfloat16")]
    if bad or not dtypes:
        raise PlanError(f"--dtype {args.dtype!r}: use float32, bfloat16 or both")
    from texter_jax.plan import CHIPS

    also = [c.strip() for c in args.also_chip.split(",") if c.strip()]
    unknown = [c for c in also if c not in CHIPS]
    if unknown:
        raise PlanError(f"--also-chip {','.join(unknown)}: known chips are {', '.join(CHIPS)}")
    if any(b < 1 for b in args.batch):
        raise PlanError("--batch sizes must be >= 1")
    if not 0 < args.margin <= 1:
        raise PlanError(f"--margin {args.margin} must be in (0, 1]")
    quiet_libtpu()
    try:
        targets = [tpu_target(t) for t in args.tpu]
    except TargetError as e:
        raise PlanError(str(e)) from None
    if args.local or not targets:
        targets.append(local_target())
    specs = {d: build_spec(args, d) for d in dtypes}
    spec0 = specs[dtypes[0]]
    sae = spec0.sae
    sae_text = "" if sae is None else f", SAE {sae.input_dim}->{sae.nb_concepts} k={sae.top_k}"
    print(f"{args.classifier}: {spec0.classifier.feature_dim} features{sae_text}"
          f"; canvas {args.canvas}, {args.steps} MACO steps, {args.crops} crops at "
          f"{spec0.classifier.image_size}; per device, one host of each slice")
    print("ESTIMATE from the compiler's cost model and published peaks, not a measurement "
          "(matmuls at the chip's bf16 peak: JAX's default precision; retries not counted)")
    print(HEADER, flush=True)
    out = []
    for tg in targets:
        for dtype in dtypes:
            spec = specs[dtype]
            rows = [(b, None, "") for b in args.batch]
            if args.max_batch:
                if tg.memory_bytes is None:
                    raise PlanError(f"{tg.name}: device memory unknown, --max-batch cannot "
                                    "be found")
                best, mem = largest_batch(spec, tg, margin=args.margin)
                if best == 0:
                    need = ("more than the device holds" if mem is None else
                            f"{_gib(max(f.peak for f in mem.values()))} GiB")
                    print(f"{tg.name:>10} {dtype:>8}: one image per device needs {need}, "
                          f"over {args.margin:.0%} of {_gib(tg.memory_bytes)} GiB", flush=True)
                else:
                    rows.append((best, mem, "*"))
            for b, mem, note in rows:
                try:
                    plan = plan_explain(spec, tg, b, memory=mem)
                except DoesNotFit as e:
                    print(f"{tg.name:>10} {dtype:>8} {b:>5}   does not fit: {e}", flush=True)
                    out.append({"target": tg.name, "dtype": dtype, "batch_per_device": b,
                                "fits": False, "error": str(e)})
                    continue
                print(_row(plan, note), flush=True)
                other = {}
                for name in also:
                    sec = plan.seconds_on(CHIPS[name])
                    other[name] = 60.0 * plan.batch / sec
                    print(f"{'':>10} {'':>8} {'':>5}  {name}: {sec / plan.batch:.3f} s/image, "
                          f"{other[name]:.1f} images/min/device with these cost figures and "
                          f"{name}'s peaks (memory not compiled for it)", flush=True)
                out.append({**plan.to_dict(), "largest_that_fits": note == "*",
                            "margin": args.margin, "other_chips_images_per_minute": other})
    if args.max_batch:
        print(f"* the largest batch per device within {args.margin:.0%} of its memory")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
