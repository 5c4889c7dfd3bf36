"""The floors (DEVELOPING.md, "Architecture"), checked on the source, function-local
imports included, so a lazy import cannot hide a wrong-way edge.

Every installed module is ``texter_jax.<...>``; the repository's folders are its floors:

==========  =================================  ==========================================
floor       folder -> import name              may import
==========  =================================  ==========================================
core        ``texter_jax/`` -> texter_jax      itself only
converters  ``converters/`` -> .converters     core
train       ``train/`` -> .train               core
eval        ``eval/`` -> .eval                 core, converters (artefact files)
world       ``world/`` -> .world               core, train, eval (the demo's one home)
cli         ``cli/`` -> .cli                   every floor (the command line on top)
==========  =================================  ==========================================

The core never parses arguments and never imports torch; only the tokenizer loader may
import ``transformers``, and the adapters ``keras`` and ``equinox``, inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "texter_jax"
FOLDERS = {"core": "texter_jax", "converters": "converters", "train": "train", "eval": "eval",
           "world": "world", "cli": "cli"}
MAY_IMPORT = {
    "core": set(),
    "converters": {"core"},
    "train": {"core"},
    "eval": {"core", "converters"},
    "world": {"core", "train", "eval"},
    "cli": {"core", "converters", "train", "eval", "world"},
}
# The world's own floor: the scenes (what is rendered and true) know nothing of its
# models or its demo.
WORLD_SCENES = {"attributes", "captions", "controls", "generator", "interventions", "mosaics",
                "views"}
# Old top-level names: nothing installed may import them (they would be a user's own
# ``train/`` or ``eval/`` on sys.path).
NOT_OURS = {"apps", "converters", "train", "eval", "world", "cli", "bench", "tests"}
NEVER = {"argparse", "torch", "torchvision"}
# Imported only inside functions: the tokenizer loader's transformers, the adapters'
# Keras and Equinox (``import texter_jax`` needs none of them).
LAZY = {"transformers", "keras", "equinox"}


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module name, line, at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        out += [(n, node.lineno, id(node) in top_level) for n in names]
    return out


def floor_of(module: str) -> str | None:
    """The floor of an import name, or None when it is not ours."""
    parts = module.split(".")
    if parts[0] != "texter_jax":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in FOLDERS and parts[1] != "core" else "core"


def _wrong_edges(floor: str) -> list[str]:
    wrong = []
    for path in sorted((REPO / FOLDERS[floor]).rglob("*.py")):
        rel = path.relative_to(REPO)
        for name, line, at_top in _imports(path):
            top, target = name.split(".")[0], floor_of(name)
            if top in NOT_OURS:
                wrong.append(f"{rel}:{line} imports {name} (use texter_jax.{name})")
            elif target is not None and target != floor and target not in MAY_IMPORT[floor]:
                wrong.append(f"{rel}:{line} imports {name} ({floor} may not import {target})")
            elif floor == "core" and (top in NEVER or (top in LAZY and at_top)):
                wrong.append(f"{rel}:{line} imports {name}")
    return wrong


@pytest.mark.parametrize("floor", list(FOLDERS))
def test_every_floor_imports_only_downwards(floor):
    wrong = _wrong_edges(floor)
    assert not wrong, "\n".join(wrong)


def test_the_world_scenes_know_nothing_of_its_models_or_demo():
    wrong = [f"world/{path.name}:{line} imports {name}"
             for path in sorted((REPO / "world").glob("*.py")) if path.stem in WORLD_SCENES
             for name, line, _ in _imports(path)
             if floor_of(name) is not None and floor_of(name) != "core"
             and not (name.startswith("texter_jax.world.")
                      and name.split(".")[2] in WORLD_SCENES)]
    assert not wrong, "\n".join(wrong)


def test_the_floor_table_is_the_package_layout():
    # every folder named here is installed under that name (pyproject's package-dir).
    import tomllib

    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {name.split(".")[1]: folder for name, folder in cfg["package-dir"].items()}
    assert mapped == {f: d for f, d in FOLDERS.items() if f != "core"}
    def import_name(init: Path) -> str:
        rel = init.parent.relative_to(REPO).parts
        mapped = {d: f"texter_jax.{f}" for f, d in FOLDERS.items() if f != "core"}
        return ".".join([mapped.get(rel[0], rel[0]), *rel[1:]])

    found = {import_name(p) for d in FOLDERS.values() for p in (REPO / d).rglob("__init__.py")}
    assert found <= set(cfg["packages"]), sorted(found - set(cfg["packages"]))


def test_the_check_sees_function_local_and_wrong_way_imports(tmp_path, monkeypatch):
    probe = tmp_path / "probe.py"
    probe.write_text("import numpy\n\n"
                     "def f():\n    from texter_jax.converters.api import convert\n")
    assert ("texter_jax.converters.api", 4, False) in _imports(probe)
    assert floor_of("texter_jax.converters.api") == "converters"
    assert floor_of("texter_jax.io.html_page") == "core" and floor_of("numpy") is None
    bad = REPO / "train" / "_probe_wrong_way.py"
    bad.write_text("def f():\n    from texter_jax.eval.metrics import spearman\n"
                   "    import eval.records\n")
    try:
        wrong = _wrong_edges("train")
    finally:
        bad.unlink()
    assert any("train may not import eval" in w for w in wrong), wrong
    assert any("imports eval.records (use texter_jax.eval.records)" in w for w in wrong), wrong


def test_public_api_names_resolve():
    import types

    import texter_jax

    missing = [n for n in texter_jax.__all__ if getattr(texter_jax, n, None) is None]
    assert not missing, missing
    # a public name must not be shadowed by a submodule of the same name once imported
    modules = [n for n in texter_jax.__all__ if isinstance(getattr(texter_jax, n),
                                                          types.ModuleType)]
    assert not modules, modules
    assert texter_jax.explain_batch.__module__ == "texter_jax.explain"
    assert texter_jax.contributions_of.__name__ == "contributions"


def test_cli_help_does_not_load_jax():
    # `texter --help` builds every subcommand's parser (CLI defaults come from config
    # dataclasses); none of that may pay for JAX or torch.
    import subprocess
    import sys

    code = ("import sys, texter_jax.cli.main; texter_jax.cli.main.build_parser(); "
            "print(sorted(m for m in ('jax', 'torch', 'flax') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=LIBRARY.parent,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_world_public_names_resolve_and_are_not_submodules():
    # a submodule's import would replace a package attribute of the same name
    import texter_jax.world as world

    modules = {p.stem for p in (REPO / "world").glob("*.py")}
    assert not set(world.__all__) & modules, sorted(set(world.__all__) & modules)
    missing = [n for n in world.__all__ if getattr(world, n, None) is None]
    assert not missing, missing
