"""docs/models.md ("bring your own model"): its Python blocks run, in order, in one
namespace, so an example that stops working fails here."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def python_blocks(text: str) -> list[str]:
    """The bodies of the page's ```python fenced blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_page_has_an_example_per_stack():
    blocks = python_blocks(PAGE.read_text())
    joined = "\n".join(blocks)
    for call in ("tj.from_keras(", "tj.from_equinox(", "tj.from_linen(",
                 "tj.nnx_classifier(", "tj.explain_batch(", "tj.unit_contributions("):
        assert call in joined, call


def test_the_page_examples_run():
    namespace: dict = {"__name__": "docs_models"}
    for i, block in enumerate(python_blocks(PAGE.read_text())):
        exec(compile(block, f"{PAGE.name} block {i}", "exec"), namespace)  # noqa: S102
    assert namespace["ex"].label.shape == (2,)
