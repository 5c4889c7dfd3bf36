"""`texter convert`: PyTorch / HF weights -> a texter_jax model folder."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert PyTorch / Hugging Face weights into a texter_jax model folder",
        description=(
            "Convert classifier or CLIP weights into a Flax model folder "
            "(texter_config.json + Orbax variables/). SOURCE is a .pth/.pt/.bin/.safetensors "
            "file, a Hugging Face model folder, or an HF model id already in the local HF "
            "cache (nothing is ever downloaded)."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("layouts: torchvision-resnet, hf-resnet, dino-resnet, torchvision-vit, "
                "hf-vit, dino-vit, hf-clip, openai-clip, efficientnet-lite\n"
                "example: texter convert resnet50.pth models/resnet50"))
    p.add_argument("source", help="weights file, HF folder, or cached HF model id")
    p.add_argument("out", help="output model folder (must not exist unless --overwrite)")
    p.add_argument("--layout", default=None,
                   help="force the source layout instead of detecting it from the keys")
    p.add_argument("--head", default=None,
                   help="linear-head weights file (DINO eval_linear format) for DINO backbones")
    p.add_argument("--num-classes", type=int, default=None,
                   help="number of classes when the head cannot tell (torchvision layouts)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=run)


def run(args) -> int:
    from converters.api import convert
    from converters.mapping import ConversionError
    from converters.state_dict import SourceError

    try:
        out = convert(args.source, args.out, layout=args.layout, head=args.head,
                      overwrite=args.overwrite, num_classes=args.num_classes)
    except (ConversionError, SourceError, FileExistsError) as e:
        print(f"texter convert: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
