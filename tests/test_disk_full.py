"""A disk that fills up mid-write: the atomic writers keep the previous file or folder,
leave no temporary files, and `texter` says so in one line; a rerun finishes the job.

The disk is simulated: ``os.fdopen`` hands out files whose writes fail with ENOSPC
after a few bytes, for files under one folder only (found through /proc/self/fd).
"""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from texter_jax.io import atomic

_real_fdopen = os.fdopen


class _FullDisk(io.RawIOBase):
    """A file whose writes fail with ENOSPC once ``room`` bytes are written."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            self.f.write(data[:self.room])
            self.f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def fill_disk_under(monkeypatch, folder: Path, *, after_files: int = 0, room: int = 10):
    """Writes under ``folder`` fail with ENOSPC, from the ``after_files``+1-th file on."""
    seen = {"n": 0}

    def fdopen(fd, *args, **kwargs):
        f = _real_fdopen(fd, *args, **kwargs)
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return f
        if target.startswith(str(folder)):
            seen["n"] += 1
            if seen["n"] > after_files:
                return _FullDisk(f, room)
        return f

    monkeypatch.setattr(atomic.os, "fdopen", fdopen)


def _no_temporaries(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.startswith(".") or
            p.suffix in (".tmp", ".partial")]


def test_json_writer_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "run.json"
    atomic.write_json_atomic(target, {"version": 1})
    fill_disk_under(monkeypatch, tmp_path)
    with pytest.raises(OSError) as e:
        atomic.write_json_atomic(target, {"version": 2, "pad": "x" * 1000})
    assert e.value.errno == errno.ENOSPC
    assert json.loads(target.read_text()) == {"version": 1}
    assert _no_temporaries(tmp_path) == []


def test_folder_writer_keeps_the_previous_folder(tmp_path, monkeypatch):
    from texter_jax import aligner

    a1 = aligner.Aligner(np.eye(3, 4, dtype=np.float32), np.zeros(3, np.float32))
    aligner.save(tmp_path / "al", a1)
    fill_disk_under(monkeypatch, tmp_path)
    a2 = aligner.Aligner(2 * np.eye(3, 4, dtype=np.float32), np.ones(3, np.float32))
    with pytest.raises(OSError):
        aligner.save(tmp_path / "al", a2, overwrite=True)
    monkeypatch.undo()
    np.testing.assert_array_equal(aligner.load(tmp_path / "al").w, a1.w)
    assert _no_temporaries(tmp_path) == []


def test_explain_stops_with_one_line_and_resumes(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")  # the tiny CLIP is built with it
    pytest.importorskip("transformers")
    from tests.helpers import aligner_folder, tiny_classifier_folder, tiny_clip_folder
    from tests.test_bad_inputs import _png
    from texter_jax.cli.main import main

    clf = tiny_classifier_folder(tmp_path / "clf")
    clip = tiny_clip_folder(tmp_path / "clip", tmp_path)
    al = aligner_folder(tmp_path / "aligner", 16, 12)
    for i in range(3):
        _png(tmp_path / "imgs" / f"im{i}.png", seed=i)
    out = tmp_path / "out"
    argv = ["explain", str(tmp_path / "imgs"), "--classifier", str(clf), "--clip", str(clip),
            "--aligner", str(al), "--no-sae", "--steps", "2", "--canvas", "32", "--crops",
            "2", "--map-crops", "2", "--ig-steps", "2", "--no-figures", "--batch-size", "1",
            "--out", str(out), "--text-cache", str(tmp_path / "cache")]
    # the second file written under out fails: the page written after the first image
    fill_disk_under(monkeypatch, out, after_files=1)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "free some space" in lines[0], err
    first = json.loads((out / "im0" / "results.json").read_text())  # intact
    assert not (out / "im1" / "results.json").exists()
    assert _no_temporaries(out) == []
    monkeypatch.undo()  # space freed
    assert main(argv) == 0
    assert json.loads((out / "im0" / "results.json").read_text()) == first
    assert all((out / f"im{i}" / "results.json").is_file() for i in range(3))
