"""Magnitude templates for MACO: a power law computed on the fly, or measured from images.

A template is float32 ``[3, S, S // 2 + 1]``: the ``rfft2`` amplitude of each of the
three *decorrelated* colour channels of an ``S x S`` canvas (the space the phase lives
in; see :mod:`texter_jax.emphasis.param`). The release downloads an ImageNet template
(``imagenet_decorrelated.npy``) at run time (``src/horama/maco_fv.py:init_maco_buffer``);
this project never fetches anything: the default is :func:`power_law_spectrum`, and
``texter spectrum IMAGE_DIR`` measures a template from local images.

Only relative values matter to MACO: the image is standardised after the inverse FFT,
so a global factor cancels (as long as the spatial std stays well above the 1e-4 added
in that standardisation, which both templates here guarantee).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from texter_jax.emphasis.param import decorrelate_colors, spectrum_shape
from texter_jax.io.atomic import write_bytes_atomic
from texter_jax.io.images import load_image

# Natural-image amplitude spectra fall as ~1/f^a with a close to 1 (power ~ 1/f^2:
# Field 1987, JOSA A 4(12); van der Schaaf & van Hateren 1996, Vision Res. 36(17),
# which reports power exponents of 1.88 +- 0.43). lucid's fft_image uses the same 1.
DEFAULT_DECAY = 1.0


def power_law_spectrum(canvas: int, decay: float = DEFAULT_DECAY) -> np.ndarray:
    """A 1/f^decay amplitude template, identical for the three decorrelated channels.

    Frequencies are radial, in cycles per pixel, over the ``rfft2`` half-plane. DC is
    given the value of the lowest non-zero frequency (1 cycle per canvas) instead of
    infinity, so the mean colour is neither frozen nor dominant. The channels share
    one profile because the colour-correlation matrix already carries each channel's
    scale: a whitened (decorrelated) natural image has about equal energy per channel.
    The template is scaled so that, with random phases, each channel's spatial image
    has unit mean square (Parseval), far above the 1e-4 in the standardisation.

    Args:
      canvas: S, side of the square canvas.
      decay: the exponent ``a`` in ``1/f^a``; 0 gives white noise.

    Returns:
      float32 numpy array [3, S, S // 2 + 1], strictly positive.

    Example:
      >>> power_law_spectrum(8).shape
      (3, 8, 5)
    """
    if canvas < 2:
        raise ValueError(f"canvas must be >= 2, got {canvas}")
    fy = np.fft.fftfreq(canvas)[:, None]
    fx = np.fft.rfftfreq(canvas)[None, :]
    f = np.maximum(np.sqrt(fy * fy + fx * fx), 1.0 / canvas)
    amp = f ** (-float(decay))
    # Parseval over the full plane: the half-plane columns other than DC (and Nyquist
    # for even S) stand for two conjugate columns each.
    col_weight = np.full(amp.shape[1], 2.0)
    col_weight[0] = 1.0
    if canvas % 2 == 0:
        col_weight[-1] = 1.0
    energy = np.sum(amp * amp * col_weight[None, :])
    amp = amp * (canvas * canvas / np.sqrt(energy))
    return np.broadcast_to(amp, spectrum_shape(canvas)).astype(np.float32)


def _square_resize(image: np.ndarray, canvas: int) -> np.ndarray:
    """float [H, W, 3] -> float32 [canvas, canvas, 3]: shorter side to canvas, centre crop.

    Cropping instead of stretching keeps frequencies isotropic.
    """
    h, w = image.shape[:2]
    if (h, w) != (canvas, canvas):
        scale = canvas / min(h, w)
        nh, nw = max(canvas, round(h * scale)), max(canvas, round(w * scale))
        chans = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32),
                                            mode="F").resize((nw, nh), Image.BILINEAR))
                 for c in range(3)]
        image = np.stack(chans, axis=-1)
        top, left = (nh - canvas) // 2, (nw - canvas) // 2
        image = image[top:top + canvas, left:left + canvas]
    return image.astype(np.float32)


def image_spectrum(image: np.ndarray) -> np.ndarray:
    """FFT amplitude of one RGB image in the decorrelated colour space.

    Args:
      image: float [S, S, 3] RGB in [0, 1].

    Returns:
      float64 [3, S, S // 2 + 1].
    """
    x = decorrelate_colors(np.asarray(image, np.float64))
    return np.abs(np.fft.rfft2(np.moveaxis(x, -1, 0), axes=(-2, -1)))


def replace_dc(magnitude: np.ndarray) -> np.ndarray:
    """The template with each channel's DC term set to its lowest-frequency ring.

    A measured template's DC (zero-frequency) term is the images' mean colour, not their
    texture: for flat-coloured images it dwarfs every other frequency. MACO pairs it with
    a random phase, so a large DC fixes the canvas's mean colour at random (on world
    renders 31 % of concept images came out in the anti-colour). The power law gives DC
    the amplitude of the lowest non-zero frequency (1 cycle per canvas); this does the
    same with the measured values: the mean of the 1-cycle bins (0, 1), (1, 0), (-1, 0).

    Args:
      magnitude: float [3, S, S // 2 + 1].

    Returns:
      float32 copy with ``[:, 0, 0]`` replaced.

    Raises:
      ValueError: a channel has no energy outside DC (flat images, no texture at all):
        such a template would make every concept image flat.
    """
    m = np.array(magnitude, np.float32)
    ring = np.stack([m[:, 0, 1], m[:, 1, 0], m[:, -1, 0]], axis=1).mean(axis=1)
    rest = m.copy()
    rest[:, 0, 0] = 0
    if np.any(rest.reshape(3, -1).max(axis=1) <= 0):
        raise ValueError("the images have no energy outside the zero frequency (flat "
                         "colours, no texture): they cannot serve as a magnitude template; "
                         "use textured images or the default power law")
    m[:, 0, 0] = ring
    return m


def spectrum_from_images(images: Iterable[str | os.PathLike | np.ndarray],
                         canvas: int, *, keep_dc: bool = False) -> np.ndarray:
    """Mean FFT amplitude of images resized (shorter side) and centre-cropped to the canvas.

    A streaming mean: one image is held at a time, plus a float64 running sum
    ([3, S, S//2+1], 20 MB at S = 1280). Amplitudes are measured after mapping RGB into
    the decorrelated colour space, so the template matches what ``phase_to_image``
    recolours (the release's template is named ``imagenet_decorrelated`` for the same
    reason). Wrap ``images`` in ``tqdm`` for progress. Images smaller than the canvas
    are upsampled, which leaves little energy at high frequencies: prefer images at
    least as large as the canvas.

    Args:
      images: file paths (loaded as RGB, EXIF-upright) or arrays [H, W, 3]
        (uint8 in [0, 255] or float in [0, 1]).
      canvas: S.
      keep_dc: keep the measured zero-frequency term; by default it is replaced by the
        lowest-frequency ring (:func:`replace_dc`), since with a random phase a large DC
        fixes a random mean colour.

    Returns:
      float32 [3, S, S // 2 + 1].

    Raises:
      ValueError: no image was given, an array is not [H, W, 3], or (unless
        ``keep_dc``) the images have no texture at all.
    """
    total = np.zeros(spectrum_shape(canvas), np.float64)
    count = 0
    for item in images:
        if isinstance(item, (str, os.PathLike)):
            img = load_image(item, resize=canvas, crop=canvas)
        else:
            img = np.asarray(item)
            if img.ndim != 3 or img.shape[-1] != 3:
                raise ValueError(f"expected an [H, W, 3] image, got shape {img.shape}")
            if img.dtype == np.uint8:
                img = img.astype(np.float32) / 255.0
            img = _square_resize(img.astype(np.float32), canvas)
        total += image_spectrum(img)
        count += 1
    if count == 0:
        raise ValueError("spectrum_from_images got no images")
    mean = (total / count).astype(np.float32)
    return mean if keep_dc else replace_dc(mean)


def save_spectrum(path: str | os.PathLike, magnitude: np.ndarray) -> Path:
    """Writes a template as float32 ``.npy`` (atomically). Returns the path written."""
    magnitude = np.asarray(magnitude, np.float32)
    _check_template(magnitude)
    buf = io.BytesIO()
    np.save(buf, magnitude)
    path = Path(path)
    write_bytes_atomic(path, buf.getvalue())
    return path


def load_spectrum(path: str | os.PathLike, canvas: int | None = None) -> np.ndarray:
    """Reads a ``.npy`` template [3, h, w]; with ``canvas``, resizes it to [3, S, S//2+1].

    Resizing is bilinear with antialiasing over the two frequency axes, as the release
    resizes its downloaded template (``F.interpolate(..., 'bilinear', antialias=True)``).
    Values are not rescaled (the release does not either; the standardisation after the
    inverse FFT absorbs the change of scale).
    """
    magnitude = np.load(path).astype(np.float32)
    _check_template(magnitude)
    if canvas is not None and magnitude.shape != spectrum_shape(canvas):
        magnitude = np.asarray(jax.image.resize(
            magnitude, spectrum_shape(canvas), method="linear", antialias=True))
    return magnitude


def default_spectrum(canvas: int, path: str | os.PathLike | None = None) -> np.ndarray:
    """The template MACO uses: ``path`` when given (resized to the canvas), else the power law."""
    if path is not None:
        return load_spectrum(path, canvas)
    return power_law_spectrum(canvas)


def _check_template(magnitude: np.ndarray) -> None:
    if magnitude.ndim != 3 or magnitude.shape[0] != 3:
        raise ValueError(f"a magnitude template is [3, h, w], got {magnitude.shape}")
    if not np.all(np.isfinite(magnitude)) or np.any(magnitude < 0):
        raise ValueError("a magnitude template must be finite and non-negative")
