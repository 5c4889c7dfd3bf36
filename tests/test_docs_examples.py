"""Every example of the documentation runs, so one that stops working fails here.

* Pages: the ```python blocks of README.md and docs/**/*.md run page by page, in order, in
  one namespace per page, in a scratch folder. A block right after a
  ``<!-- skip: why -->`` comment is not run (it needs real checkpoints on disk); those
  stay few. docs/models.md has its own test (tests/test_docs_models.py).
* Docstrings: every module of the package whose source holds a ``>>>`` example runs as a
  doctest.
"""

from __future__ import annotations

import doctest
import importlib
import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OWN_TEST = {"docs/models.md"}  # run by tests/test_docs_models.py
# The installed package: folder -> import name (pyproject.toml's package-dir).
FLOORS = {"texter_jax": "texter_jax", "converters": "texter_jax.converters",
          "train": "texter_jax.train", "eval": "texter_jax.eval", "world": "texter_jax.world",
          "cli": "texter_jax.cli"}
BLOCK = re.compile(r"^(<!-- skip: (?P<why>[^>]*?) -->\n)?```python\n(?P<body>.*?)^```$",
                   flags=re.S | re.M)


def pages() -> list[str]:
    found = ["README.md"] + sorted(str(p.relative_to(ROOT))
                                   for p in (ROOT / "docs").rglob("*.md")
                                   if "_build" not in p.parts)
    return [p for p in found if p not in OWN_TEST and BLOCK.search((ROOT / p).read_text())]


def blocks(page: str) -> list[tuple[str | None, str]]:
    """(reason to skip or None, body) of each ```python block of the page, in order."""
    text = (ROOT / page).read_text()
    return [(m.group("why"), m.group("body")) for m in BLOCK.finditer(text)]


def doctest_modules() -> list[str]:
    out = []
    for folder, package in FLOORS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if ">>>" in path.read_text():
                rel = path.relative_to(ROOT / folder).with_suffix("")
                parts = [p for p in rel.parts if p != "__init__"]
                out.append(".".join([package, *parts]))
    return out


def test_every_page_with_python_is_found_and_skips_are_few():
    found = pages()
    assert {"README.md", "docs/getting_started.md", "docs/sessions.md"} <= set(found)
    skipped = [(p, why) for p in found for why, _ in blocks(p) if why is not None]
    assert len(skipped) <= 3, skipped
    assert all(why.strip() for _, why in skipped)


_RAN: set[tuple[str, ...]] = set()  # pages whose code equals one already run (the home
# page, the README and getting started share their example) run it once


@pytest.mark.parametrize("page", pages())
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever an example writes lands in a scratch folder
    run = [(i, body) for i, (why, body) in enumerate(blocks(page)) if why is None]
    assert run, f"{page}: every block is skipped"
    key = tuple(body for _, body in run)
    if key in _RAN:
        return
    # a module of its own, so that classes defined on the page (dataclasses) resolve
    module = types.ModuleType("docs_page_" + re.sub(r"\W", "_", page))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for i, body in run:
        exec(compile(body, f"{page} block {i}", "exec"), module.__dict__)  # noqa: S102
    _RAN.add(key)


def test_docstring_examples_are_all_collected():
    mods = doctest_modules()
    assert "texter_jax.converters.api" in mods and "texter_jax.eval.metrics.hits" in mods
    assert len(mods) >= 18


@pytest.mark.parametrize("module", doctest_modules())
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} failed"
    assert result.attempted > 0, f"{module}: its >>> examples are all skipped"
