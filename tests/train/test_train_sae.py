"""TopK SAE training: learning on sparse data, exact resume after kill -9, bad folders."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from texter_jax.io.checkpoints import CheckpointError
from texter_jax.sae import SaeConfig
from texter_jax.sae import load as load_sae
from texter_jax.train.features import FeatureShards
from texter_jax.train.sae_train import (
    SaeTrainConfig,
    clip_by_global_norm_torch,
    evaluate_sae,
    train_sae,
)

REPO = Path(__file__).resolve().parents[2]


def _sparse_data(n, d=16, atoms=32, active=3, seed=0):
    """Rows are non-negative combinations of ``active`` random unit atoms."""
    rng = np.random.default_rng(seed)
    dic = rng.normal(size=(atoms, d))
    dic /= np.linalg.norm(dic, axis=1, keepdims=True)
    codes = np.zeros((n, atoms))
    for i in range(n):
        codes[i, rng.choice(atoms, active, replace=False)] = rng.uniform(0.5, 2.0, active)
    return (codes @ dic).astype(np.float32)


def test_sae_learns_sparse_data(tmp_path):
    x = _sparse_data(2560)
    np.save(tmp_path / "train.npy", x[:2048])
    cfg = SaeConfig(input_dim=16, nb_concepts=64, top_k=4)
    res = train_sae(FeatureShards(tmp_path / "train.npy"), tmp_path / "run", sae_config=cfg,
                    train_config=SaeTrainConfig(epochs=6, batch_size=64, lr=5e-3,
                                                checkpoint_every=0),
                    progress=False, verbose=False)
    losses = [log["loss"] for log in res.logs]
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0], losses
    assert all(log["l0"] == pytest.approx(4.0) for log in res.logs)
    assert all(0.0 <= log["dead"] < 1.0 for log in res.logs)
    held = evaluate_sae(res.params, x[2048:], cfg.top_k)
    assert held["r2"] > 0.7, held  # 0.81 here; top-4 of 64 codes for 3-sparse data
    rows = np.linalg.norm(res.params["dictionary"]["weights"], axis=1)
    np.testing.assert_allclose(rows, 1.0, atol=1e-5)
    config, params = load_sae(tmp_path / "run" / "sae")
    assert config == cfg
    np.testing.assert_array_equal(params["encoder"]["kernel"], res.params["encoder"]["kernel"])
    # Rerunning a finished run resumes at the end and changes nothing.
    again = train_sae(FeatureShards(tmp_path / "train.npy"), tmp_path / "run", sae_config=cfg,
                      train_config=SaeTrainConfig(epochs=6, batch_size=64, lr=5e-3,
                                                  checkpoint_every=0),
                      progress=False, verbose=False)
    assert again.resumed_from == 6 * 32 and again.logs == res.logs


def test_clip_matches_torch_clip_grad_norm():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    g = {"a": rng.normal(size=(4, 3)).astype(np.float32),
         "b": rng.normal(size=5).astype(np.float32)}
    ours, _ = clip_by_global_norm_torch(1.0).update(jax.tree.map(jax.numpy.asarray, g), None)
    ps = [torch.nn.Parameter(torch.zeros(v.shape)) for v in g.values()]
    for p, v in zip(ps, g.values(), strict=True):
        p.grad = torch.from_numpy(v.copy())
    torch.nn.utils.clip_grad_norm_(ps, 1.0)
    for p, k in zip(ps, g, strict=True):
        np.testing.assert_allclose(np.asarray(ours[k]), p.grad.numpy(), rtol=1e-6)


def _train_cmd(features, out):
    return [sys.executable, "-m", "texter_jax.cli.train_cli", "train-sae",
            "--features", str(features), "--out", str(out), "--epochs", "3",
            "--batch-size", "32", "--expansion", "4", "--top-k", "4", "--lr", "5e-3",
            "--checkpoint-every", "5", "--no-progress"]


def _steps(ckpt_dir):
    if not ckpt_dir.is_dir():
        return []
    return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())


def test_resume_after_kill_is_exact(tmp_path):
    np.save(tmp_path / "x.npy", _sparse_data(1200))  # 37 steps / epoch, 111 in all
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    full = subprocess.Popen(_train_cmd(tmp_path / "x.npy", tmp_path / "full"), cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    victim = subprocess.Popen(_train_cmd(tmp_path / "x.npy", tmp_path / "killed"), cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 120
    while not _steps(ckpt) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = _steps(ckpt)
    assert killed_at and killed_at[-1] < 111, killed_at
    assert not (tmp_path / "killed" / "sae").exists()

    resumed = subprocess.run(_train_cmd(tmp_path / "x.npy", tmp_path / "killed"), cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from" in resumed.stdout
    out, _ = full.communicate(timeout=300)
    assert full.returncode == 0, out

    _, a = load_sae(tmp_path / "full" / "sae")
    _, b = load_sae(tmp_path / "killed" / "sae")
    for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(leaf_a, leaf_b)


def test_corrupt_and_foreign_checkpoint_folders(tmp_path):
    np.save(tmp_path / "x.npy", _sparse_data(256))
    shards = FeatureShards(tmp_path / "x.npy")
    cfg = SaeConfig(input_dim=16, nb_concepts=32, top_k=4)
    tcfg = SaeTrainConfig(epochs=1, batch_size=64, checkpoint_every=2)
    train_sae(shards, tmp_path / "run", sae_config=cfg, train_config=tcfg,
              progress=False, verbose=False)
    # Corrupt: truncate every file of the latest checkpoint.
    ckpt = tmp_path / "run" / "checkpoints"
    latest = ckpt / str(max(_steps(ckpt)))
    for f in latest.rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    with pytest.raises(CheckpointError, match=str(latest)):
        train_sae(shards, tmp_path / "run", sae_config=cfg, train_config=tcfg,
                  progress=False, verbose=False)
    # Foreign: a folder that is not ours.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="foreign"):
        train_sae(shards, tmp_path / "other", sae_config=cfg, train_config=tcfg,
                  progress=False, verbose=False)
    # A run folder of another configuration.
    with pytest.raises(CheckpointError, match="other settings"):
        train_sae(shards, tmp_path / "run", sae_config=SaeConfig(16, 32, 8),
                  train_config=tcfg, progress=False, verbose=False)
    # Garbage in the checkpoints folder itself.
    (tmp_path / "g" / "checkpoints").mkdir(parents=True)
    (tmp_path / "g" / "train_config.json").write_text(
        (tmp_path / "run" / "train_config.json").read_text())
    (tmp_path / "g" / "checkpoints" / "junk").write_text("x")
    with pytest.raises(CheckpointError, match="corrupt or foreign"):
        train_sae(shards, tmp_path / "g", sae_config=cfg, train_config=tcfg,
                  progress=False, verbose=False)
