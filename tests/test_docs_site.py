"""The documentation site: it builds with warnings as errors, documents every public
name, every internal link and #anchor of the built pages resolves, and the pages open in
headless Chromium without a console error (``./dev docs`` builds the same site)."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.test_pages import _chromium, needs_chromium

ROOT = Path(__file__).resolve().parents[1]
# The public modules of the floors above the core, whose __all__ the API pages document.
FLOOR_MODULES = ("texter_jax.converters.api", "texter_jax.converters.artifacts",
                 "texter_jax.converters.sae_formats", "texter_jax.eval.metrics",
                 "texter_jax.world")
# Pages a browser opens: the home page, a guide, the longest table page, an API page.
BROWSED = ("index.html", "getting_started.html", "measurements.html", "api/texter_jax.html")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "html"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q",
                           "-b", "html", str(ROOT / "docs"), str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


class _Refs(HTMLParser):
    """Every id on a page and every href / src it points at."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if a.get(key):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if a.get(key) and not (tag == "link" and a.get("rel") == "preconnect"):
                self.links.append(a[key])


def _parse(page: Path) -> _Refs:
    refs = _Refs()
    refs.feed(page.read_text(encoding="utf-8"))
    return refs


def test_every_internal_link_and_anchor_resolves(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 15
    parsed = {p: _parse(p) for p in pages}
    broken, checked = [], 0
    for page, refs in parsed.items():
        for link in refs.links:
            url = urlsplit(link)
            if url.scheme or link.startswith("//"):
                continue  # external (the pages name a few; nothing is fetched to view them)
            target = (page.parent / unquote(url.path)).resolve() if url.path else page
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: {link} (no such file)")
            elif url.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if unquote(url.fragment) not in ids:
                    broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert checked > 200
    assert not broken, "\n".join(broken[:40])


def test_the_api_reference_documents_every_public_name(site):
    import texter_jax

    ids = _parse(site / "api" / "texter_jax.html").ids
    missing = [n for n in texter_jax.__all__ if f"texter_jax.{n}" not in ids]
    assert not missing, missing
    floors = _parse(site / "api" / "floors.html").ids
    for module in FLOOR_MODULES:
        mod = importlib.import_module(module)
        names = getattr(mod, "__all__", None) or [  # else the functions and classes it defines
            n for n, v in vars(mod).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == module]
        assert names, module
        missing = [n for n in names  # documented where it is defined, or as texter_jax.<n>
                   if not any(i.startswith(module) and i.endswith(f".{n}") for i in floors)
                   and f"texter_jax.{n}" not in ids]
        assert not missing, (module, missing)


def test_shapes_and_dtypes_are_rendered(site):
    text = re.sub(r"<[^>]+>", "", (site / "api" / "texter_jax.html").read_text())
    assert "float32 [B, H, W, 3] in [0, 1]" in text  # explain_batch's images
    assert "float32 [T, E]" in text


@needs_chromium
@pytest.mark.parametrize("page", BROWSED)
def test_pages_open_in_chromium_without_console_errors(site, page, tmp_path):
    proc = _chromium(site / page, tmp_path, "--virtual-time-budget=3000", "--dump-dom")
    log = proc.stderr
    problems = [line for line in log.splitlines()
                if "CONSOLE" in line or "Uncaught" in line or "ERR_FILE_NOT_FOUND" in line]
    assert not problems, "\n".join(problems[:20])
    assert 'role="main"' in proc.stdout and "texter_jax" in proc.stdout


@needs_chromium
def test_home_page_screenshot(site, tmp_path):
    shot = tmp_path / "home.png"
    proc = _chromium(site / "index.html", tmp_path, "--window-size=1280,1600",
                     f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 20000, proc.stderr[-1000:]


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for target in re.findall(r"\]\(([^)#\s]+)", text):
        if not urlsplit(target).scheme:
            assert (ROOT / target).exists(), target
