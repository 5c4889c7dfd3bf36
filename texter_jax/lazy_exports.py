"""PEP 562 lazy exports: a package lists which submodule defines each public name, and a
name is imported on first use (so importing the package loads no JAX).

>>> import types
>>> pkg = types.ModuleType("demo_pkg")
>>> getattr_, dir_ = lazy_exports("json", vars(pkg), {"loads": ("decoder", "JSONDecoder")})
>>> getattr_("loads").__name__
'JSONDecoder'
>>> "loads" in vars(pkg)  # cached in the package's namespace after the first use
True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any


def lazy_exports(package: str, namespace: MutableMapping[str, Any],
                 where: Mapping[str, tuple[str, str]],
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
      package: the package's ``__name__``.
      namespace: its ``globals()``; a resolved name is stored there, so later lookups
        do not reach ``__getattr__``.
      where: public name -> (submodule relative to ``package``, attribute name in it).
    """

    def __getattr__(name: str) -> Any:
        if name in where:
            module, attr = where[name]
            value = getattr(importlib.import_module(f"{package}.{module}"), attr)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
