"""The two floors (DEVELOPING.md, "Architecture"): the library ``texter_jax/`` never
reaches up into the apps floor (``apps``, ``converters``, ``train``, ``eval``), never
parses arguments and never imports torch; only the tokenizer loader may import
``transformers``, and the adapters ``keras`` and ``equinox``, inside a function. Checked on the source, function-local imports
included, so a lazy import cannot hide a wrong-way edge."""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "texter_jax"
APPS_FLOOR = {"apps", "converters", "train", "eval", "bench", "tests"}
NEVER = {"argparse", "torch", "torchvision"}
# Imported only inside functions: the tokenizer loader's transformers, the adapters'
# Keras and Equinox (``import texter_jax`` needs none of them).
LAZY = {"transformers", "keras", "equinox"}


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(top-level module name, line, at module level) for every import in ``path``."""
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
        out += [(n.split(".")[0], node.lineno, id(node) in top_level) for n in names]
    return out


def test_library_imports_only_downwards():
    wrong = []
    for path in sorted(LIBRARY.rglob("*.py")):
        rel = path.relative_to(LIBRARY.parent)
        for name, line, at_top in _imports(path):
            if name in APPS_FLOOR or name in NEVER or (name in LAZY and at_top):
                wrong.append(f"{rel}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_function_local_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import numpy\n\ndef f():\n    from converters.api import convert\n")
    assert ("converters", 4, False) in _imports(probe)


def test_public_api_names_resolve():
    import texter_jax

    import types

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

    code = ("import sys, apps.cli; apps.cli.build_parser(); "
            "print(sorted(m for m in ('jax', 'torch', 'flax') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=LIBRARY.parent,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
