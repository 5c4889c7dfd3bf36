"""The three train subcommands end to end on a tiny converted ResNet."""

import json

import numpy as np
import pytest
from PIL import Image

from texter_jax.cli import train_cli as cli


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
    from texter_jax.aligner import load as load_aligner

    r = load_aligner(out)
    assert r.w.shape == (8, 8) and r.method == "closed_form"
    # Output exists: refused without --overwrite.
    assert cli.main(["train-aligner", "--features", str(tmp_path / "fa"), "--targets",
                     str(tmp_path / "fs"), "--out", str(out)]) == 2


def test_extract_features_two_processes_equal_one(tiny_model, tmp_path):
    """Two processes (jax.distributed, loopback coordinator) write their shares of the
    shards; the folder equals a single-process extraction, manifest included."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from texter_jax.train.features import FeatureShards

    root = tmp_path / "imgs"
    rng = np.random.default_rng(1)
    for cls in ("x", "y"):
        (root / cls).mkdir(parents=True)
        for i in range(7):
            Image.fromarray(rng.integers(0, 255, (230, 250, 3), dtype=np.uint8)).save(
                root / cls / f"{i}.png")
    (root / "x" / "bad.png").write_bytes(b"junk")
    base = ["extract-features", "--model", str(tiny_model), "--images", str(root),
            "--batch-size", "2", "--shard-size", "4", "--workers", "1", "--no-progress"]
    assert cli.main(base + ["--out", str(tmp_path / "one")]) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(repo)}
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "texter_jax.cli", *base, "--out", str(tmp_path / "two"),
         "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
        env=env, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    one, two = FeatureShards(tmp_path / "one"), FeatureShards(tmp_path / "two")
    assert one.files == two.files and len(one) == 14
    np.testing.assert_allclose(two.read_all(), one.read_all(), atol=1e-6)
    m1 = json.loads((tmp_path / "one" / "manifest.json").read_text())
    m2 = json.loads((tmp_path / "two" / "manifest.json").read_text())
    drop = ("seconds_last_run",)
    assert {k: v for k, v in m1.items() if k not in drop} == \
        {k: v for k, v in m2.items() if k not in drop}
    assert m2["complete"] and m2["num_shards"] == 4  # 15 inputs, 4 per shard
