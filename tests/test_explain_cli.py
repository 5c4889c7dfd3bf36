"""`texter explain` from the command line on real model folders: results.json and
figure.png per image, unreadable files skipped by name, the baseline method, and clear
set-up errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import aligner_folder, sae_folder, tiny_classifier_folder, tiny_clip_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    clf = tiny_classifier_folder(root / "clf")
    clip = tiny_clip_folder(root / "clip", root)
    al = aligner_folder(root / "aligner", 16, 12)
    sae = sae_folder(root / "sae", 16)
    imgs = root / "images"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), np.uint8)).save(imgs / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (30, 30, 4), np.uint8), "RGBA").save(imgs / "b.png")
    Image.fromarray(rng.integers(0, 255, (36, 36), np.uint8), "L").save(imgs / "c.png")
    Image.fromarray(rng.integers(0, 255, (36, 36, 4), np.uint8), "CMYK").save(imgs / "d.jpg")
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root, clf, clip, al, sae, imgs


def _explain(*args):
    return subprocess.run([sys.executable, "-m", "texter_jax.cli", "explain", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=900)


SMALL = ["--steps", "3", "--canvas", "48", "--crops", "2", "--map-crops", "2",
         "--ig-steps", "8", "--k-neu", "3", "--batch-size", "4"]


def test_explain_cli_texter(setup):
    root, clf, clip, al, sae, imgs = setup
    out = root / "out"
    proc = _explain(str(imgs), "--classifier", str(clf), "--clip", str(clip), "--aligner",
                    str(al), "--sae", str(sae), "--out", str(out), *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "broken.jpg" in proc.stderr  # reported by name, run continued
    for name in ("a", "b", "c", "d"):
        rec = json.loads((out / name / "results.json").read_text())
        assert rec["method"] == "texter" and rec["use_sae"] is True
        assert 0 <= rec["predicted_label"] < 5
        assert rec["pred_class_name"] == f"class_{rec['predicted_label']}"
        assert 0 < rec["pred_prob"] <= 1
        ranked = rec["ranked_texts"]
        assert len(ranked) == rec["num_concepts_total"] > 300  # the shipped generic bank
        scores = [s for _, s in ranked]
        assert scores == sorted(scores, reverse=True)
        assert len(set(scores)) > len(scores) // 2  # distinct texts, distinct embeddings
        assert all(-1 <= s <= 1 for s in scores)
        assert 3 <= len(rec["top_k_influential_indices"]) <= 16
        assert (out / name / "figure.png").stat().st_size > 1000
    run = json.loads((out / "run.json").read_text())
    assert run["written"] == 4 and [e["path"] for e in run["skipped"]] == [
        str(imgs / "broken.jpg")]
    # no temporary files left behind
    assert not list(out.rglob("*.tmp"))
    # a rerun with the same seed reproduces the scores (text cache now warm); alone
    # instead of in a batch of 4, so only fp32 reduction order differs: 1e-4.
    out2 = root / "out2"
    proc = _explain(str(imgs / "a.jpg"), "--classifier", str(clf), "--clip", str(clip),
                    "--aligner", str(al), "--sae", str(sae), "--out", str(out2),
                    "--text-cache", str(out / ".text_cache"), *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a1 = json.loads((out / "a" / "results.json").read_text())["ranked_texts"]
    a2 = json.loads((out2 / "a" / "results.json").read_text())["ranked_texts"]
    s1, s2 = dict(a1), dict(a2)
    assert s1.keys() == s2.keys()
    np.testing.assert_allclose([s1[t] for t in s1], [s2[t] for t in s1], atol=1e-4)


def test_explain_cli_baseline_and_bank_file(setup):
    root, clf, clip, al, sae, imgs = setup
    bank = root / "bank.txt"
    bank.write_text("red fur\nstriped pattern\nblue sky\n")
    out = root / "out_t2c"
    proc = _explain(str(imgs / "a.jpg"), "--classifier", str(clf), "--clip", str(clip),
                    "--aligner", str(al), "--method", "text2concept", "--bank", str(bank),
                    "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads((out / "a" / "results.json").read_text())
    assert rec["method"] == "text2concept"
    assert sorted(t for t, _ in rec["ranked_texts"]) == ["blue sky", "red fur",
                                                          "striped pattern"]


def test_explain_cli_setup_errors(setup):
    root, clf, clip, al, sae, imgs = setup
    proc = _explain(str(imgs), "--classifier", str(clf), "--clip", str(clip), "--aligner",
                    str(al), "--out", str(root / "o3"))
    assert proc.returncode == 2 and "--sae" in proc.stderr
    wrong = aligner_folder(root / "aligner_wrong", 7, 12)
    proc = _explain(str(imgs), "--classifier", str(clf), "--clip", str(clip), "--aligner",
                    str(wrong), "--no-sae", "--out", str(root / "o4"))
    assert proc.returncode == 2 and "(12, 7)" in proc.stderr
    proc = _explain(str(root / "nothing_here_*.jpg"), "--classifier", str(clf), "--clip",
                    str(clip), "--aligner", str(al), "--no-sae", "--out", str(root / "o5"))
    assert proc.returncode == 2 and "nothing_here_" in proc.stderr


def test_explain_cli_fast_preset_needs_whole_windows(setup):
    root, clf, clip, al, sae, imgs = setup
    proc = _explain(str(imgs / "a.jpg"), "--classifier", str(clf), "--clip", str(clip),
                    "--aligner", str(al), "--sae", str(sae), "--out", str(root / "fast"),
                    *SMALL, "--preset", "fast")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "multiple of stop_window" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (root / "fast").exists()


def test_explain_cli_batch_size_auto(setup):
    """--batch-size auto: the largest batch the compiled programs fit (at most the 5
    images' worth) is chosen before the first batch and said on stderr."""
    root, clf, clip, al, sae, imgs = setup
    out = root / "out_auto"
    args = [a for a in SMALL if a not in ("--batch-size", "4")]
    proc = _explain(str(imgs), "--classifier", str(clf), "--clip", str(clip), "--aligner",
                    str(al), "--sae", str(sae), "--out", str(out), *args,
                    "--batch-size", "auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "texter explain: batch size 5 (5 per device)" in proc.stderr
    assert all((out / n / "results.json").is_file() for n in "abcd")
    bad = _explain(str(imgs), "--classifier", str(clf), "--clip", str(clip), "--aligner",
                   str(al), "--out", str(out), "--batch-size", "lots")
    assert bad.returncode == 2 and "give a positive number or auto" in bad.stderr
