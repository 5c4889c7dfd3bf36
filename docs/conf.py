"""Sphinx configuration of the texter_jax documentation (``./dev docs`` builds it)."""

import importlib
import inspect
import os
import re

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # autodoc imports the package; no accelerator probe
os.environ.setdefault("KERAS_BACKEND", "jax")

import texter_jax  # noqa: E402

project = "texter_jax"
author = "The texter_jax authors"
copyright = "The texter_jax authors"  # noqa: A001
release = version = texter_jax.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "bad_inputs_table.md", "README.md"]

# Markdown pages: GitHub-style anchors for every heading down to ###, so that
# [text](page.md#a-heading) links resolve (tests/test_docs_site.py walks them).
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# API reference: docstrings are Google style with reST roles (:func:, :mod:, ...).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as a field list (autodoc documents the fields too)
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_mock_imports: list[str] = []
add_module_names = False

html_theme = "furo"
html_title = f"texter_jax {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
html_copy_source = False


def _assignment_comment(module: str, attr: str, depth: int = 0) -> list[str]:
    """The ``#`` comment block right above ``attr = ...`` in ``module``'s source,
    following a lazy export table (``_WHERE``) or a ``from X import attr`` line."""
    mod = importlib.import_module(module)
    where = getattr(mod, "_WHERE", {}).get(attr)
    if where is not None and depth < 3:  # texter_jax: (module, attr); texter_jax.world: module
        sub = where[0] if isinstance(where, tuple) else where
        return _assignment_comment(f"{module}.{sub}", attr, depth + 1)
    source = inspect.getsource(mod)
    lines = source.splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"{re.escape(attr)}\b\s*(:[^=]*)?=", line):
            comment: list[str] = []
            j = i - 1
            while j >= 0 and lines[j].startswith("#"):
                comment.insert(0, lines[j].lstrip("#").strip())
                j -= 1
            return comment
    found = re.search(rf"^from (\S+) import [^;]*?\b{re.escape(attr)}\b", source, flags=re.M)
    if found and depth < 3:
        return _assignment_comment(found.group(1), attr, depth + 1)
    return []


def _comment_docstring(app, what, name, obj, options, lines):
    """A public constant's docstring is the ``#`` comment above its assignment.

    ``texter_jax.KEY_TAGS`` and the like are plain dicts and tuples, whose ``__doc__`` is
    their type's; the source says what they hold in the comment right above them.
    """
    if what != "data" or getattr(obj, "__doc__", None) != type(obj).__doc__:
        return
    module, _, attr = name.rpartition(".")
    comment = _assignment_comment(module, attr)
    if comment:
        lines[:] = [" ".join(comment)]
    elif lines and lines[0].startswith(type(obj).__doc__.splitlines()[0][:20]):
        lines[:] = []


def _skip_tuple_aliases(app, what, name, obj, skip, options):
    """NamedTuple fields are described in the class docstring; skip their generated
    "Alias for field number N" entries."""
    doc = getattr(obj, "__doc__", None) or ""
    return True if doc.startswith("Alias for field number") else skip


def setup(app):
    app.connect("autodoc-process-docstring", _comment_docstring)
    app.connect("autodoc-skip-member", _skip_tuple_aliases)
