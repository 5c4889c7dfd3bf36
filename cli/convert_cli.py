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
    p.add_argument("--num-heads", type=int, default=None,
                   help="attention heads of a ViT / DINO ViT / CLIP image tower whose width "
                        "is not a published size (the weights do not store it)")
    p.add_argument("--text-heads", type=int, default=None,
                   help="attention heads of an OpenAI-layout CLIP text tower whose width 64 "
                        "does not divide")
    p.add_argument("--activation", choices=("quick_gelu", "gelu"), default=None,
                   help="MLP activation of an OpenAI-layout CLIP (default quick_gelu, as "
                        "OpenAI's models; open_clip models trained elsewhere often use gelu)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="also read whole pickled models (torch.save(model)); this runs code "
                        "from the file: only for files you trust")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="convert weights that hold NaN or infinite values (refused otherwise)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=run)


def run(args) -> int:
    from texter_jax.converters.api import convert
    from texter_jax.converters.mapping import ConversionError
    from texter_jax.converters.state_dict import SourceError

    try:
        out = convert(args.source, args.out, layout=args.layout, head=args.head,
                      overwrite=args.overwrite, num_classes=args.num_classes,
                      num_heads=args.num_heads, text_heads=args.text_heads,
                      activation=args.activation, allow_pickle=args.allow_pickle,
                      allow_nonfinite=args.allow_nonfinite)
    except (ConversionError, SourceError) as e:
        print(f"texter convert: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the output: exists already, or its folder cannot be made
        where = f" ({e.filename})" if e.filename else ""
        print(f"texter convert: error: cannot write {args.out}: {e.strerror or e}{where}",
              file=sys.stderr)
        return 2
    except ValueError as e:  # a model config that refuses what the weights imply
        print(f"texter convert: error: {args.source}: the weights imply an invalid "
              f"model: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
