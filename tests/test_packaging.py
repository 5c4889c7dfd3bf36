"""Building the package prints no warning from our metadata, and the wheel carries the
licence, an SPDX licence expression, the version ``texter_jax.__version__`` states and one
top-level import package, ``texter_jax`` (the repository's ``converters/``, ``train/``,
``eval/``, ``world/`` and ``cli/`` folders install under it).

The build runs as ``pip wheel`` does for users (an isolated build environment with the
setuptools ``pyproject.toml`` asks for), so a deprecated field fails here first."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import texter_jax

REPO = Path(__file__).resolve().parents[1]
# setuptools' own notes about byte-compiling are not about our metadata
_NOT_OURS = re.compile(r"byte-compiling is disabled")


def test_the_wheel_builds_without_metadata_warnings(tmp_path):
    # from a copy: setuptools writes build/ next to the sources
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "runs", "*.egg-info", "__pycache__", "texter_demo",
        ".pytest_cache"))
    out = tmp_path / "wheel"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w",
                           str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    warned = [line.strip() for line in log.splitlines()
              if re.search(r"warning|deprecat", line, re.I) and not _NOT_OURS.search(line)]
    assert not warned, warned[:5]
    (wheel,) = out.glob("texter_jax-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        licence = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        assert b"Apache License" in z.read(licence)
        entry_points = z.read(next(n for n in names
                                   if n.endswith(".dist-info/entry_points.txt"))).decode()
    # one import namespace: nothing but texter_jax/ at the wheel's top level
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"texter_jax"}, sorted(tops)
    for sub in ("cli/main.py", "converters/api.py", "train/sae_train.py",
                "eval/metrics/hits.py", "world/demo.py", "data/generic_concepts.txt"):
        assert f"texter_jax/{sub}" in names, sub
    assert "texter = texter_jax.cli.main:main" in entry_points
    assert "License-Expression: Apache-2.0" in meta
    assert f"Version: {texter_jax.__version__}\n" in meta
    assert texter_jax.__version__ in wheel.name
