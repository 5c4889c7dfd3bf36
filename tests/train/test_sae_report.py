"""The SAE report against numpy on the same arrays (reconstruction, sparsity, dead and
dense latents, splicing cost with a linear head), and `texter train-sae` printing and
writing it with a classifier's head."""

import json

import jax
import numpy as np
import pytest

from texter_jax.sae import SaeConfig, init_sae, sae_apply
from texter_jax.train.sae_report import plot_firing_frequency, sae_report
from texter_jax.world.stack import _Rows


def test_report_equals_numpy(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 16)) + 1.5).astype(np.float32)
    labels = rng.integers(-1, 4, size=300)
    params = init_sae(jax.random.key(0), SaeConfig(16, 64, 6))
    w = rng.normal(size=(16, 4)).astype(np.float32)
    got, freq = sae_report(params, _Rows(x), 6, head=lambda z: z @ w, labels=labels,
                           batch_size=128)

    _, codes, x_hat = (np.asarray(a, np.float64) for a in sae_apply(params, x, 6))
    xf = x.astype(np.float64)
    fires = (codes > 0).mean(0)
    np.testing.assert_allclose(freq, fires)
    want = {"r2": 1 - ((xf - x_hat) ** 2).sum() / ((xf - xf.mean()) ** 2).sum(),
            "explained_variance": 1 - (xf - x_hat).var(0).sum() / xf.var(0).sum(),
            "l0": (np.abs(codes) >= 1e-6).sum(1).mean(), "dead": (fires == 0).mean(),
            "dense": (fires > 0.1).mean()}
    a, b = xf @ w, x_hat @ w
    p = np.exp(a - a.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = np.exp(b - b.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    known = labels >= 0
    want.update(agreement=(a.argmax(1) == b.argmax(1)).mean(),
                kl=(p * np.log(p / q)).sum(1).mean(),
                accuracy=(a.argmax(1) == labels)[known].mean(),
                accuracy_spliced=(b.argmax(1) == labels)[known].mean())
    for k, v in want.items():  # float32 forward, float64 sums
        assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
    assert 0 < got["dead"] < 1 and got["rows"] == 300

    png = plot_firing_frequency(freq, tmp_path / "f.png", title="t")
    assert png.stat().st_size > 5000


def test_train_sae_cli_reports_with_the_classifier(tmp_path, capsys):
    pytest.importorskip("texter_jax.models.resnet")
    from texter_jax.cli import train_cli as cli
    from texter_jax.io.checkpoints import save_model
    from texter_jax.models import resnet
    from texter_jax.models.registry import build_model

    config = {"block": "basic", "depths": [1], "widths": [8], "stem_width": 8,
              "num_classes": 3, "image_size": 224}
    model = build_model("resnet", config)
    clf = tmp_path / "clf"
    save_model(clf, "resnet", config, resnet.random_variables(model))
    feats = tmp_path / "x.npy"
    np.save(feats, np.abs(np.random.default_rng(1).normal(size=(64, 8))).astype(np.float32))
    out = tmp_path / "run"
    assert cli.main(["train-sae", "--features", str(feats), "--out", str(out),
                     "--batch-size", "16", "--epochs", "2", "--classifier", str(clf),
                     "--aux-k", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "sae_report.json").read_text())
    assert report["on"] == "the 64 training rows" and report["rows"] == 64
    assert 0 <= report["agreement"] <= 1 and report["kl"] >= 0 and "accuracy" not in report
    assert f"agreement {report['agreement']:.3f}" in printed
    assert (out / "firing_frequency.png").stat().st_size > 5000
    # a classifier for other features is refused before any training
    bad = tmp_path / "run2"
    np.save(tmp_path / "y.npy", np.ones((64, 5), np.float32))
    assert cli.main(["train-sae", "--features", str(tmp_path / "y.npy"), "--out", str(bad),
                     "--batch-size", "16", "--classifier", str(clf), "--no-progress"]) == 2
    assert not bad.exists()
