"""Feature extraction: image quirks, skipped files, shard layout, resume, reader."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from texter_jax.train.features import (
    FeatureShards,
    FeatureShardsError,
    extract_features,
    list_image_folder,
    preprocess_image,
    read_file_list,
)


def _features_fn(images):
    """[B, S, S, 3] in [0, 1] -> per-channel mean and top-minus-bottom mean: [B, 6]."""
    s = images.shape[1]
    top, bottom = images[:, : s // 2].mean((1, 2)), images[:, s // 2:].mean((1, 2))
    return jnp.concatenate([images.mean((1, 2)), top - bottom], axis=1)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    (root / "a_cat").mkdir()
    (root / "b_dog").mkdir()
    Image.new("RGB", (300, 240), (255, 0, 0)).save(root / "a_cat" / "red.jpg", quality=95)
    Image.new("RGBA", (240, 240), (0, 0, 255, 0)).save(root / "a_cat" / "clear.png")
    Image.new("L", (256, 300), 128).save(root / "a_cat" / "grey.png")
    Image.new("CMYK", (240, 260), (0, 0, 0, 0)).save(root / "b_dog" / "cmyk.jpg")
    (root / "b_dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    # Stored landscape: left half white, right half black, EXIF orientation 6 (the viewer
    # rotates 90 degrees clockwise), so upright the white half is on top.
    im = Image.new("RGB", (320, 240), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 160, 240))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(root / "b_dog" / "rotated.jpg", exif=exif, quality=95)
    Image.new("RGB", (230, 400), (0, 255, 0)).save(root / "b_dog" / "green.png")
    return root


def test_preprocess_quirks(image_root):
    red = preprocess_image(image_root / "a_cat" / "red.jpg", "sae")
    assert red.shape == (224, 224, 3) and red.dtype == np.uint8
    assert red[..., 0].min() > 240 and red[..., 1].max() < 15
    clear = preprocess_image(image_root / "a_cat" / "clear.png", "aligner")
    assert clear.min() == 255  # transparent -> composited on white
    grey = preprocess_image(image_root / "a_cat" / "grey.png", "clip")
    assert grey.shape == (224, 224, 3) and np.all(grey == 128)
    cmyk = preprocess_image(image_root / "b_dog" / "cmyk.jpg", "aligner")
    assert cmyk.shape == (224, 224, 3) and cmyk.min() > 240  # CMYK 0,0,0,0 is white
    rot = preprocess_image(image_root / "b_dog" / "rotated.jpg", "aligner").astype(float)
    assert rot[:100].mean() > 200 and rot[-100:].mean() < 50


def test_list_image_folder_and_file_list(image_root, tmp_path):
    items, classes = list_image_folder(image_root)
    assert classes == ["a_cat", "b_dog"]
    assert [label for _, label in items] == [0, 0, 0, 1, 1, 1, 1]
    lst = tmp_path / "list.txt"
    lst.write_text(f"# comment\n{items[0][0]} 3\n{items[1][0]}\n")
    assert read_file_list(lst) == [(items[0][0], 3), (items[1][0], -1)]


def test_extract_skip_and_resume(image_root, tmp_path):
    items, classes = list_image_folder(image_root)
    out = tmp_path / "feats"
    extract_features(items, _features_fn, out, preprocess="aligner", batch_size=2,
                     shard_size=4, num_workers=2, classes=classes, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_shards"] == 2
    assert manifest["num_features"] == 6 and manifest["feature_dim"] == 6
    assert [s["path"].endswith("broken.jpg") for s in manifest["skipped"]] == [True]
    assert "cannot read image" in manifest["skipped"][0]["error"]

    fs = FeatureShards(out)
    assert len(fs) == 6 and fs.dim == 6
    names = [f.rsplit("/", 1)[1] for f in fs.files]
    assert names == ["clear.png", "grey.png", "red.jpg", "cmyk.jpg", "green.png", "rotated.jpg"]
    np.testing.assert_array_equal(fs.labels, [0, 0, 0, 1, 1, 1])
    all_rows = fs.read_all()
    np.testing.assert_allclose(all_rows[names.index("green.png"), :3], [0, 1, 0], atol=1e-6)
    assert all_rows[names.index("rotated.jpg"), 3] > 0.8  # upright: white on top
    np.testing.assert_array_equal(fs.take(np.array([5, 0, 3])), all_rows[[5, 0, 3]])

    # Interrupted run: the last shard never got written.
    first_mtime = (out / "features_00000.npy").stat().st_mtime_ns
    for name in ("features_00001.npy", "labels_00001.npy", "files_00001.json"):
        (out / name).unlink()
    m = json.loads((out / "manifest.json").read_text())
    m["complete"] = False
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FeatureShardsError, match="incomplete"):
        FeatureShards(out)
    extract_features(items, _features_fn, out, preprocess="aligner", batch_size=2,
                     shard_size=4, num_workers=2, classes=classes, progress=False)
    assert (out / "features_00000.npy").stat().st_mtime_ns == first_mtime
    np.testing.assert_array_equal(FeatureShards(out).read_all(), all_rows)

    # Same folder, other inputs: refused.
    with pytest.raises(FeatureShardsError, match="other inputs"):
        extract_features(items[:3], _features_fn, out, preprocess="aligner",
                         batch_size=2, shard_size=4, progress=False)
