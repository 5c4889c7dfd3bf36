"""Reading user images: files, folders and globs -> RGB float arrays in [0, 1].

Every loader respects EXIF orientation and converts palette, greyscale, RGBA and CMYK
images to RGB. Unreadable files raise :class:`ImageLoadError` naming the file, so batch
jobs can report and skip them.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class ImageLoadError(ValueError):
    """An image file cannot be decoded; the message names the file."""


def image_files(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """The image files in ``folder`` (by suffix, case-insensitive), sorted by path."""
    folder = Path(folder)
    entries = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def list_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expands files, folders (recursively) and glob patterns into sorted image paths.

    Raises:
      FileNotFoundError: an input matches nothing.
    """
    out: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            found = image_files(path)
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(text, recursive=True)
                           if Path(p).is_file())
            if not found:
                raise FileNotFoundError(f"no image matches {text!r}")
        out.extend(found)
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def load_rgb(path: str | os.PathLike):
    """Opens ``path`` as an upright RGB PIL image (EXIF orientation applied)."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                # Composite on white: transparent pixels carry arbitrary RGB values.
                rgba = im.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(canvas, rgba)
            return im.convert("RGB")  # greyscale, palette, CMYK, I;16 -> RGB
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageLoadError(f"cannot read image {path}: {e}") from e


def resize_center_crop(image, resize: int, crop: int, *, resample: str = "bilinear"):
    """torchvision-style ``Resize(resize)`` (shorter side, antialiased; ``"bilinear"`` or
    ``"bicubic"``) then ``CenterCrop(crop)`` on a PIL image."""
    filt = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[resample]
    w, h = image.size
    if w <= h:
        new_w, new_h = resize, max(1, int(resize * h / w))
    else:
        new_w, new_h = max(1, int(resize * w / h)), resize
    if (new_w, new_h) != (w, h):  # already at size: resampling would be the identity
        image = image.resize((new_w, new_h), filt)
    left = int(round((new_w - crop) / 2.0))
    top = int(round((new_h - crop) / 2.0))
    return image.crop((left, top, left + crop, top + crop))


def load_image(path: str | os.PathLike, *, resize: int = 224, crop: int = 224) -> np.ndarray:
    """Loads one image as float32 [crop, crop, 3] in [0, 1] (Resize + CenterCrop)."""
    im = resize_center_crop(load_rgb(path), resize, crop)
    return np.asarray(im, dtype=np.float32) / 255.0


# The preprocessings, by name: for an input of side S, (resize of the shorter side as a
# multiple of S, resampling filter); a centre crop of S follows.
PREPROCESSINGS: dict[str, tuple[float, str]] = {
    # ImageNet evaluation, Resize(S * 256/224) + CenterCrop(S): `texter explain`, `texter
    # eval` by default, and the release's SAE features (Resize(256) + CenterCrop(224))
    "imagenet": (256 / 224, "bilinear"),
    # Resize(S) + CenterCrop(S): the release's aligner features; the identity for square
    # images already at S (the procedural world)
    "resize": (1.0, "bilinear"),
    # CLIP's own (OpenAI clip: Resize(S, bicubic) + CenterCrop(S))
    "clip": (1.0, "bicubic"),
}


def preprocess_sizes(name: str, size: int) -> tuple[int, int, str]:
    """``(resize, crop, resample)`` of the preprocessing ``name`` for side ``size``."""
    if name not in PREPROCESSINGS:
        raise ValueError(f"preprocessing must be one of {sorted(PREPROCESSINGS)}, got {name!r}")
    scale, resample = PREPROCESSINGS[name]
    return int(round(size * scale)), size, resample


def load_preprocessed(path: str | os.PathLike, name: str, size: int, *,
                      dtype=np.float32) -> np.ndarray:
    """One image after the named preprocessing: [size, size, 3], float32 in [0, 1] (or
    uint8 in [0, 255] with ``dtype=np.uint8``). Raises :class:`ImageLoadError` naming the
    file when it cannot be decoded."""
    resize, crop, resample = preprocess_sizes(name, size)
    im = np.asarray(resize_center_crop(load_rgb(path), resize, crop, resample=resample))
    return im.astype(np.uint8) if dtype == np.uint8 else im.astype(np.float32) / 255.0
