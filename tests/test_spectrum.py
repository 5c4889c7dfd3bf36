"""MACO's magnitude templates: the power law, measured spectra, the DC rule, `texter
spectrum` (split from test_emphasis.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from texter_jax.emphasis import (
    init_phase,
    load_spectrum,
    power_law_spectrum,
    save_spectrum,
    spectrum_from_images,
)
from texter_jax.emphasis.param import spectrum_shape


def test_power_law_spectrum_properties():
    s = 64
    mag = power_law_spectrum(s, decay=1.0)
    assert mag.shape == (3, s, s // 2 + 1) and mag.dtype == np.float32
    assert np.all(mag > 0) and np.array_equal(mag[0], mag[2])
    # isotropic and conjugate-symmetric along rows: f(ky, kx) = f(kx, ky) = f(-ky, kx)
    assert mag[0, 0, 5] == pytest.approx(mag[0, 5, 0], rel=1e-6)
    assert mag[0, 3, 4] == pytest.approx(mag[0, s - 3, 4], rel=1e-6)
    # 1/f: doubling the frequency halves the amplitude; DC is clamped to f = 1/S
    assert mag[0, 0, 8] / mag[0, 0, 16] == pytest.approx(2.0, rel=1e-5)
    assert mag[0, 0, 0] == pytest.approx(mag[0, 0, 1], rel=1e-6)
    assert np.allclose(power_law_spectrum(s, decay=0.0), power_law_spectrum(s, decay=0.0)[0, 0, 0])
    # unit mean square per channel (Parseval over the full plane)
    w = np.full(s // 2 + 1, 2.0)
    w[0] = w[-1] = 1.0
    assert np.sum(mag[0].astype(np.float64) ** 2 * w) / s**4 == pytest.approx(1.0, rel=1e-5)


def test_spectrum_from_images_synthetic(tmp_path):
    s = 32
    yy, xx = np.mgrid[:s, :s]
    wave = 0.5 + 0.25 * np.cos(2 * np.pi * 4 * xx / s)  # 4 cycles along x
    img = np.repeat(wave[..., None], 3, axis=-1).astype(np.float32)
    mag = spectrum_from_images([img], s)
    assert mag.shape == spectrum_shape(s)
    lum = mag.sum(axis=0)
    lum[0, 0] = 0
    assert np.unravel_index(np.argmax(lum), lum.shape) == (0, 4)
    # streaming mean == mean of per-image spectra; uint8 input == float input
    rng = np.random.default_rng(0)
    a, b = rng.random((s, s, 3), np.float32), rng.random((s, s, 3), np.float32)
    both = spectrum_from_images(iter([a, b]), s)
    np.testing.assert_allclose(
        both, 0.5 * (spectrum_from_images([a], s) + spectrum_from_images([b], s)), rtol=1e-5)
    u8 = (a * 255).round().astype(np.uint8)
    np.testing.assert_allclose(spectrum_from_images([u8], s),
                               spectrum_from_images([u8 / np.float32(255)], s), rtol=1e-5)
    # other sizes are resized + centre-cropped; save/load round trip and resize on load
    assert spectrum_from_images([rng.random((40, 50, 3))], s).shape == spectrum_shape(s)
    path = save_spectrum(tmp_path / "m.npy", both)
    np.testing.assert_array_equal(load_spectrum(path), both)
    assert load_spectrum(path, canvas=16).shape == spectrum_shape(16)
    with pytest.raises(ValueError):
        spectrum_from_images([], s)


def test_measured_dc_is_replaced_by_the_lowest_ring():
    # Near-flat colour images: almost all energy at DC. Kept, it would fix the concept
    # image's mean colour by the sign of a random phase; replaced, it is the 1-cycle
    # ring's mean, as in the power law.
    from texter_jax.emphasis.param import phase_to_image
    from texter_jax.emphasis.spectrum import replace_dc

    s, rng = 32, np.random.default_rng(1)
    flat = [np.clip(np.array([0.9, 0.2, 0.1]) + 0.02 * rng.standard_normal((s, s, 3)), 0, 1)
            for _ in range(4)]
    raw = spectrum_from_images(flat, s, keep_dc=True)
    fixed = spectrum_from_images(flat, s)
    ring = np.stack([raw[:, 0, 1], raw[:, 1, 0], raw[:, -1, 0]], 1).mean(1)
    np.testing.assert_allclose(fixed[:, 0, 0], ring, rtol=1e-6)
    np.testing.assert_array_equal(fixed[:, 1:], raw[:, 1:])
    assert np.all(raw[:, 0, 0] > 50 * fixed[:, 0, 0])
    # What DC does to MACO's images: the share of pixel variance that is the per-channel
    # mean (a flat random colour), over random phases.
    def mean_colour_share(mag):
        shares = []
        for k in range(8):
            img = np.asarray(phase_to_image(init_phase(jax.random.key(k), s), jnp.asarray(mag)))
            logit = np.log(img / (1 - img))
            shares.append(np.var(logit.mean(axis=(0, 1))) / np.var(logit))
        return float(np.mean(shares))
    assert mean_colour_share(raw) > 0.8 > 0.2 > mean_colour_share(fixed)
    with pytest.raises(ValueError, match="no energy outside the zero frequency"):
        spectrum_from_images([np.full((s, s, 3), 0.5, np.float32)], s)
    with pytest.raises(ValueError, match="no energy"):
        replace_dc(np.zeros((3, s, s // 2 + 1), np.float32))


# ---------------------------------------------------------------- param


def test_spectrum_cli(tmp_path, capsys):
    from PIL import Image

    from texter_jax.cli.main import main

    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        arr = (rng.random((40 + 4 * i, 36, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / ("sub" if i else ".") / f"im{i}.png")
    out = tmp_path / "spec.npy"
    assert main(["spectrum", str(folder), "--canvas", "32", "--out", str(out),
                 "--no-progress"]) == 0
    mag = np.load(out)
    assert mag.shape == (3, 32, 17) and mag.dtype == np.float32
    paths = sorted(folder.rglob("*.png"))
    np.testing.assert_allclose(mag, spectrum_from_images(paths, 32), rtol=1e-6)
    assert "3 images" in capsys.readouterr().out
    assert main(["spectrum", str(tmp_path / "missing"), "--out", str(out)]) == 2
