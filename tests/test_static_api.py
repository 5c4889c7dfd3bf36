"""The public API as tools see it: ``texter_jax/__init__.py``'s ``if TYPE_CHECKING:``
imports name exactly the lazy table's public names, each once, from the module the
table says; at run time the package stays lazy (importing it loads no JAX)."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import texter_jax

INIT = Path(texter_jax.__file__)
REPO = INIT.parents[1]


def _type_checking_block() -> ast.If:
    tree = ast.parse(INIT.read_text())
    blocks = [n for n in tree.body if isinstance(n, ast.If) and isinstance(n.test, ast.Name)
              and n.test.id == "TYPE_CHECKING"]
    assert len(blocks) == 1, "expected one top-level `if TYPE_CHECKING:` block"
    return blocks[0]


def test_type_checking_imports_are_the_lazy_table():
    block = _type_checking_block()
    assert not block.orelse
    static: dict[str, tuple[str, str]] = {}
    dupes = []
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 0, ast.dump(node)
        assert node.module.startswith("texter_jax."), node.module
        for alias in node.names:
            # `import x as x` is the explicit re-export type checkers honour.
            assert alias.asname is not None, f"{node.module}.{alias.name} needs `as`"
            if alias.asname in static:
                dupes.append(alias.asname)
            static[alias.asname] = (node.module.removeprefix("texter_jax."), alias.name)
    assert not dupes, f"imported more than once: {dupes}"
    assert static == texter_jax._WHERE
    assert sorted(static) == texter_jax.__all__


def test_each_static_import_is_the_object_the_package_gives():
    for name, (module, attr) in sorted(texter_jax._WHERE.items()):
        want = getattr(importlib.import_module(f"texter_jax.{module}"), attr)
        assert getattr(texter_jax, name) is want, name


def test_importing_the_package_loads_no_jax():
    code = ("import sys, texter_jax; texter_jax.__version__; dir(texter_jax); "
            "print(sorted(m for m in ('jax', 'flax', 'numpy', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
