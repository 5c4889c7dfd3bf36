"""The three train subcommands end to end on a tiny converted ResNet."""

import json

import numpy as np
import pytest
from PIL import Image

from train import cli


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    resnet = pytest.importorskip("texter_jax.models.resnet")
    from texter_jax.io.checkpoints import save_model
    from texter_jax.models.registry import build_model

    config = {"block": "basic", "depths": [1], "widths": [8], "stem_width": 8,
              "num_classes": 3, "image_size": 224}
    model = build_model("resnet", config)
    out = tmp_path_factory.mktemp("model") / "tiny"
    save_model(out, "resnet", config, resnet.random_variables(model))
    return out


def test_extract_then_train_aligner(tiny_model, tmp_path):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for cls in ("x", "y"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            arr = rng.integers(0, 255, size=(240 + 8 * i, 260, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    (root / "y" / "bad.jpg").write_bytes(b"junk")
    base = ["extract-features", "--model", str(tiny_model), "--images", str(root),
            "--batch-size", "4", "--shard-size", "8", "--workers", "2", "--no-progress"]
    assert cli.main(base + ["--out", str(tmp_path / "fa")]) == 0
    assert cli.main(base + ["--out", str(tmp_path / "fs"), "--preprocess", "sae"]) == 0
    manifest = json.loads((tmp_path / "fa" / "manifest.json").read_text())
    assert manifest["num_features"] == 12 and manifest["feature_dim"] == 8
    assert manifest["kind"] == "classifier_features" and len(manifest["skipped"]) == 1

    out = tmp_path / "aligner"
    assert cli.main(["train-aligner", "--features", str(tmp_path / "fa"), "--targets",
                     str(tmp_path / "fs"), "--out", str(out), "--holdout", "0.25"]) == 0
    from train.aligner import load_aligner

    r = load_aligner(out)
    assert r.W.shape == (8, 8) and r.method == "closed_form"
    # Output exists: refused without --overwrite.
    assert cli.main(["train-aligner", "--features", str(tmp_path / "fa"), "--targets",
                     str(tmp_path / "fs"), "--out", str(out)]) == 2
