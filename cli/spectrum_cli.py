"""``texter spectrum``: measure a MACO magnitude template from a folder of images."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "spectrum",
        help="mean FFT magnitude of images, as a MACO magnitude template (.npy)",
        description=(
            "Average the FFT amplitude of every image under IMAGE_DIR (recursively), each "
            "resized (shorter side) and centre-cropped to CANVAS and mapped to the "
            "decorrelated colour space MACO optimises in. Writes float32 "
            "[3, CANVAS, CANVAS // 2 + 1]. The zero-frequency (mean colour) term is replaced "
            "by the lowest-frequency ring unless --keep-dc. Without a template, MACO uses a "
            "1/f power law."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: texter spectrum data/imagenet_val --canvas 1280 --out spectrum.npy")
    p.add_argument("image_dir", help="folder of images (searched recursively)")
    p.add_argument("--canvas", type=int, default=1280, help="canvas side S (default 1280)")
    p.add_argument("--out", default="spectrum.npy", help="output .npy (default spectrum.npy)")
    p.add_argument("--limit", type=int, default=None,
                   help="use at most this many images (sorted order)")
    p.add_argument("--keep-dc", action="store_true",
                   help="keep the measured zero-frequency (mean colour) term; by default it "
                        "is replaced by the lowest-frequency ring, since with MACO's random "
                        "phase a large DC fixes a random mean colour")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from texter_jax.emphasis.spectrum import save_spectrum, spectrum_from_images
    from texter_jax.io.images import ImageLoadError, list_images

    if not Path(args.image_dir).is_dir():
        print(f"texter spectrum: error: {args.image_dir} is not a folder", file=sys.stderr)
        return 2
    paths = list_images([args.image_dir])
    if args.limit is not None:
        paths = paths[: args.limit]
    if not paths:
        print(f"texter spectrum: error: no images under {args.image_dir}", file=sys.stderr)
        return 2
    try:  # a place the template cannot go is found before the work, not after
        Path(args.out).absolute().parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"texter spectrum: error: cannot write {args.out}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    try:
        magnitude = spectrum_from_images(
            tqdm(paths, desc="spectrum", unit="img", disable=args.no_progress), args.canvas,
            keep_dc=args.keep_dc)
    except (ImageLoadError, ValueError) as e:
        print(f"texter spectrum: error: {e}", file=sys.stderr)
        return 1
    out = save_spectrum(args.out, magnitude)
    print(f"wrote {out} {tuple(magnitude.shape)} from {len(paths)} images")
    return 0
