"""ruff, configured in pyproject.toml, finds nothing in the whole tree (the rule set the
contributors' guide names: pyflakes, pycodestyle, isort, bugbear, pyupgrade)."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_rules_are_the_documented_ones():
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["line-length"] == 100
    assert set(ruff["lint"]["select"]) >= {"F", "E", "W", "I", "B", "UP"}


def test_ruff_check_is_clean_over_the_tree():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
    assert "All checks passed" in proc.stdout
