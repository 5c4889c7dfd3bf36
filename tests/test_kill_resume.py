"""kill -9 in the middle of a long command, then the same command again: the result equals
an uninterrupted run's (explain, eval, extract-features; train-sae has its own test in
tests/train/test_train_sae.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.test_bad_inputs import _eval, _explain, world  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]


def _texter(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "texter_jax.cli", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def _kill_when(argv: list[str], ready: Callable[[], bool], timeout: float = 300) -> None:
    """Starts ``texter argv`` and SIGKILLs it as soon as ``ready()`` holds."""
    proc = subprocess.Popen([sys.executable, "-m", "texter_jax.cli", *argv], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"finished before it could be killed: {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("never reached the point to kill it at")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _with_out(argv: list[str], out: Path) -> list[str]:
    return [a.replace("{out}", str(out)) for a in argv]


def test_explain_killed_then_rerun_equals_one_run(world, tmp_path):  # noqa: F811
    base = _explain(world, "--no-sae", "--batch-size", "1", "--text-cache",
                    str(tmp_path / "cache"))
    base = [a for a in base if a not in ("--sae", world["sae"])]
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert _texter(_with_out(base, ref)).returncode == 0
    _kill_when(_with_out(base, out), lambda: len(list(out.rglob("results.json"))) >= 2)
    assert _texter(_with_out(base, out)).returncode == 0
    want = sorted(p.relative_to(ref) for p in ref.rglob("results.json"))
    assert want == sorted(p.relative_to(out) for p in out.rglob("results.json"))
    for rel in want:
        assert json.loads((out / rel).read_text()) == json.loads((ref / rel).read_text())


def _records(folder: Path) -> dict:
    recs = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    return {(r["image"], r["method"]): r for r in recs}


def test_eval_killed_then_rerun_equals_one_run(world, tmp_path):  # noqa: F811
    base = _eval(world, "--methods", "texter-nosae,random", "--batch-size", "1")
    base = [a for a in base if a not in ("--sae", world["sae"])]
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert _texter(_with_out(base, ref)).returncode == 0
    lines = lambda: (out / "records.jsonl").read_text().count("\n") \
        if (out / "records.jsonl").is_file() else 0  # noqa: E731
    _kill_when(_with_out(base, out), lambda: lines() >= 3)
    # the page was refreshed as the run went: the records so far are cards already
    page = (out / "index.html").read_text()
    assert "running" in page and page.count('<div class="card') >= 2
    again = _texter(_with_out(base, out))
    assert again.returncode == 0, again.stderr
    a, b = _records(ref), _records(out)
    assert a.keys() == b.keys() and len(a) == 12
    for k in a:
        assert a[k]["metrics"] == b[k]["metrics"] and a[k]["top_concepts"] == b[k]["top_concepts"]


def test_extract_features_killed_then_rerun_equals_one_run(world, tmp_path):  # noqa: F811
    base = ["extract-features", "--model", world["clf"], "--images", world["imgs"],
            "--out", "{out}", "--batch-size", "1", "--shard-size", "1", "--workers", "1",
            "--no-progress"]
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert _texter(_with_out(base, ref)).returncode == 0
    _kill_when(_with_out(base, out), lambda: len(list(out.glob("features_*.npy"))) >= 2)
    assert _texter(_with_out(base, out)).returncode == 0
    shards = sorted(p.name for p in ref.glob("features_*.npy"))
    assert shards == sorted(p.name for p in out.glob("features_*.npy")) and len(shards) == 6
    for name in shards:
        np.testing.assert_array_equal(np.load(out / name), np.load(ref / name))
