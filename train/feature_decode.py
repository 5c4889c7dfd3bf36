"""Host side of feature extraction: named image preprocessings and threaded decoding.

Decoding and resizing run in a ``ThreadPoolExecutor`` (PIL releases the GIL while
decoding and resampling, so threads scale without the pickling cost of processes; grain
is not installed here and would add a dependency for the same effect). A sliding window
of futures (:func:`ordered_map`) keeps ``prefetch_batches`` batches decoding while the
device runs.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Iterator

import numpy as np

from texter_jax.io.images import load_preprocessed

# `--preprocess` name -> (the library's preprocessing, side): one table for every
# command, :data:`texter_jax.io.images.PREPROCESSINGS`.
PREPROCESS: dict[str, tuple[str, int]] = {
    # classifier features for the aligner (release IMAGENET_TRANSFORMATION: Resize(224))
    "aligner": ("resize", 224),
    # classifier features for the SAE (release train_sae.py: Resize(256) + CenterCrop(224))
    "sae": ("imagenet", 224),
    # CLIP's own preprocessing (OpenAI clip: Resize(224, bicubic) + CenterCrop(224))
    "clip": ("clip", 224),
}


def preprocess_image(path: str | os.PathLike, preprocess: str,
                     size: int | None = None) -> np.ndarray:
    """Decodes one image as uint8 [S, S, 3] after the named preprocessing, at side
    ``size`` (default the release's, 224).

    EXIF orientation is applied; RGBA/LA/palette-with-transparency are composited on
    white, greyscale/CMYK/16-bit converted to RGB (``texter_jax.io.images.load_rgb``).
    Resize is torchvision's ``Resize(int)`` on a PIL image (shorter side to ``resize``,
    longer side truncated, antialiased), then ``CenterCrop`` with rounded offsets.

    Raises:
      texter_jax.io.images.ImageLoadError: the file cannot be decoded (names the file).
    """
    name, default = PREPROCESS[preprocess]
    return load_preprocessed(path, name, size or default, dtype=np.uint8)


def ordered_map(pool, fn, iterable: Iterable, window: int) -> Iterator:
    """``pool.map`` with at most ``window`` tasks in flight, results in input order.

    Each result is ``(True, value)`` or ``(False, exception)``.
    """
    def call(x):
        try:
            return True, fn(x)
        except Exception as e:  # reported and skipped by the caller
            return False, e

    pending: collections.deque = collections.deque()
    it = iter(iterable)
    for x in it:
        pending.append(pool.submit(call, x))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
