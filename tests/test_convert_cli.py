"""`texter convert` end to end: real on-disk files in, a loadable model folder out, and
nothing left behind when a conversion fails."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from texter_jax.io.checkpoints import CheckpointError, load_model

REPO = Path(__file__).resolve().parents[1]


def _texter(*args, env=None):
    return subprocess.run([sys.executable, "-m", "texter_jax.cli", *args], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def resnet18_pth(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    with torch.no_grad():  # non-trivial BN statistics, so the conversion of BN is tested
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("src") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_convert_cli_resnet18_matches_torch(resnet18_pth, tmp_path):
    tmodel, pth = resnet18_pth
    out = tmp_path / "converted"
    proc = _texter("convert", str(pth), str(out))
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout
    model, variables = load_model(out)
    assert model.family == "resnet" and model.num_classes == 7
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    ours = np.asarray(model.logits(variables, x))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = tmodel((torch.from_numpy(x).permute(0, 3, 1, 2) - mean) / std).numpy()
    # fp32 at highest precision; 1e-4 is the project's parity bound.
    assert np.abs(ours - ref).max() <= 1e-4


def test_convert_refuses_existing_output(resnet18_pth, tmp_path):
    _, pth = resnet18_pth
    out = tmp_path / "exists"
    out.mkdir()
    proc = _texter("convert", str(pth), str(out))
    assert proc.returncode == 2
    assert "already exists" in proc.stderr


def test_failed_conversion_leaves_nothing(resnet18_pth, tmp_path):
    tmodel, _ = resnet18_pth
    sd = {k: v.clone() for k, v in tmodel.state_dict().items()}
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)  # wrong kernel size
    del sd["layer2.0.bn1.running_var"]
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    out_parent = tmp_path / "outs"
    out_parent.mkdir()
    proc = _texter("convert", str(bad), str(out_parent / "model"))
    assert proc.returncode == 2
    assert "layer1.0.conv1.weight" in proc.stderr and "(64, 64, 5, 5)" in proc.stderr
    assert "layer2.0.bn1.running_var" in proc.stderr
    assert not (out_parent / "model").exists()
    assert _leftovers(out_parent) == []


def test_unknown_architecture_lists_supported(tmp_path):
    bad = tmp_path / "mystery.pth"
    torch.save({"encoder.w": torch.zeros(3), "decoder.w": torch.zeros(3)}, bad)
    proc = _texter("convert", str(bad), str(tmp_path / "m"))
    assert proc.returncode == 2
    assert "torchvision-resnet" in proc.stderr and "hf-clip" in proc.stderr
    assert not (tmp_path / "m").exists()


def test_hf_id_missing_from_cache_is_a_clear_error(tmp_path):
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "empty_cache"), HF_HUB_OFFLINE="1")
    proc = _texter("convert", "openai/clip-vit-base-patch16", str(tmp_path / "c"), env=env)
    assert proc.returncode == 2
    assert "not in the local Hugging Face cache" in proc.stderr
    assert "never downloads" in proc.stderr


def test_missing_file_is_named(tmp_path):
    proc = _texter("convert", str(tmp_path / "nope.pth"), str(tmp_path / "o"))
    assert proc.returncode == 2 and "nope.pth" in proc.stderr


def test_convert_help():
    proc = _texter("convert", "--help")
    assert proc.returncode == 0 and "--layout" in proc.stdout


def test_load_model_rejects_foreign_folder(tmp_path):
    (tmp_path / "texter_config.json").write_text('{"format": "something/else"}')
    with pytest.raises(CheckpointError, match="format"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="texter_config.json is missing"):
        load_model(tmp_path / "nothing")


def test_core_library_never_imports_torch():
    code = ("import sys, texter_jax.cli.main, texter_jax.classifier, texter_jax.contributions, "
            "texter_jax.mapping, texter_jax.sae, texter_jax.io.checkpoints, "
            "texter_jax.models.resnet, texter_jax.models.vit, texter_jax.models.clip; "
            "texter_jax.cli.main.build_parser(); "
            "bad=[m for m in sys.modules if m.split('.')[0] in ('torch','transformers')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
