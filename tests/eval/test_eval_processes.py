"""`texter eval` as two processes (jax.distributed, loopback coordinator, CPU collectives
through gloo), each with 2 host devices its batches split over: each explains its share
of the images, process 0 merges; the merged records equal a single-process run (one
device), and a second two-process run resumes with nothing left to do."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.eval.test_eval_cli import _eval, _records

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--methods", "texter-nosae,text2concept", "--sanity", "seed", "--batch-size", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _eval_two_processes(world, out):
    root, data, models = world
    args = ["eval", str(data), "--out", str(out), "--class-names",
            str(data / "class_names.txt"), "--bank", str(data / "bank.txt"), "--no-generic",
            "--truth", str(data / "truth.json"), "--steps", "2", "--canvas", "32",
            "--crops", "2", "--map-crops", "2", "--ig-steps", "4", "--k-neu", "2",
            "--n-boot", "100", "--top-k", "3", "--preprocess", "resize", *ARGS]
    for k, v in models.items():
        args += [f"--{k}", str(v)]
    port = _free_port()
    env = {**os.environ, "JAX_DEFAULT_MATMUL_PRECISION": "highest", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(REPO)}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "texter_jax.cli", *args, "--coordinator", f"127.0.0.1:{port}",
         "--num-processes", "2", "--process-id", str(i)], env=env, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, e) in zip(procs, outs, strict=True):
        assert p.returncode == 0, e[-3000:]
    return [e for _, e in outs]


def _assert_same_csv(got: Path, want: Path) -> None:
    """The same table; numbers to fp32 rounding."""
    rows_got = [r.split(",") for r in got.read_text().splitlines()]
    rows_want = [r.split(",") for r in want.read_text().splitlines()]
    assert len(rows_got) == len(rows_want)
    for a, b in zip(rows_got, rows_want, strict=True):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            try:
                np.testing.assert_allclose(float(x), float(y), atol=1e-5)
            except ValueError:
                assert x == y


def test_two_processes_equal_one(world):
    root, _, _ = world
    single, multi = root / "single", root / "multi"
    assert _eval(world, single, *ARGS) == 0
    errs = _eval_two_processes(world, multi)
    assert "process 0 of 2" in errs[0] and "process 1 of 2" in errs[1]
    assert "process 0 merges" in errs[1]
    a = {(r["image"], r["method"]): r for r in _records(single)}
    b = _records(multi)  # merged in sample order, whatever the sharing
    assert sorted(a) == sorted((r["image"], r["method"]) for r in b)
    assert len(b) == len(a) == 16  # 8 readable images x 2 methods
    for rb in b:
        ra = a[rb["image"], rb["method"]]
        # the same concepts; scores to fp32 rounding (2 devices vs 1 reduce in another order)
        assert [t for t, _ in ra["top_concepts"]] == [t for t, _ in rb["top_concepts"]]
        np.testing.assert_allclose([v for _, v in rb["top_concepts"]],
                                   [v for _, v in ra["top_concepts"]], atol=1e-5)
        assert ra["metrics"].keys() == rb["metrics"].keys()
        for k, v in ra["metrics"].items():
            np.testing.assert_allclose(rb["metrics"][k], v, atol=1e-5, err_msg=k)
    assert not (multi / "parts").exists() or not any((multi / "parts").iterdir())
    run = json.loads((multi / "run.json").read_text())
    assert run["records"] == len(a) and run["new_records"] == len(a)
    assert [s["image"] for s in run["skipped"]] == ["class_00/broken.png"]
    _assert_same_csv(multi / "summary.csv", single / "summary.csv")

    # resume: every readable pair is already recorded, nothing is recomputed (the
    # unreadable image's pairs stay pending and are skipped again)
    errs = _eval_two_processes(world, multi)
    assert all("16 already recorded" in e for e in errs), errs
    assert "process 1: 0 new record(s)" in errs[1]
    assert _records(multi) == b
    assert json.loads((multi / "run.json").read_text())["new_records"] == 0


def test_process_flags_must_come_together(world, capsys):
    assert _eval(world, world[0] / "bad", "--num-processes", "2") == 2
    assert "--coordinator HOST:PORT, --num-processes and --process-id" in \
        capsys.readouterr().err
