"""`index.html` pages: escaping of everything that comes from data, and the page as a real
browser shows it (Debian's headless Chromium; `.ci/run` installs it when absent)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from texter_jax.io.html_page import Card, render_page, write_page

HOSTILE = "<img src=x onerror=alert(1)>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                    "(apt-get install chromium; .ci/run does it)")


def _chromium(page: Path, tmp: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr",
         "--v=0", *flags, page.as_uri() if "#" not in str(page) else str(page)],
        capture_output=True, text=True, timeout=120)


def _dom(page_url: str, tmp: Path) -> tuple[str, str]:
    proc = _chromium(Path(page_url), tmp, "--virtual-time-budget=3000", "--dump-dom")
    return proc.stdout, proc.stderr


def _cards(dom: str) -> list[dict]:
    out = []
    for m in re.finditer(r'<div class="card[^"]*"([^>]*)>', dom):
        attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', m.group(1)))
        attrs["hidden"] = "hidden" in m.group(0)
        out.append(attrs)
    return out


def test_text_from_data_is_escaped():
    cards = [Card(name="<script>alert(2)</script>.png", image=None, pred='a "class"',
                  prob=0.5, concepts=[(HOSTILE, 0.9), ("fine", 0.1)])]
    page = render_page(title="t", cards=cards, settings={"bank": HOSTILE})
    assert "<img src=x" not in page and "<script>alert" not in page
    assert page.count("&lt;img src=x onerror=alert(1)&gt;") == 2  # concept + setting
    assert 'data-pred="a &quot;class&quot;"' in page


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """A `texter explain` run on the tiny models: six images, figures on."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.helpers import aligner_folder, tiny_classifier_folder, tiny_clip_folder
    from tests.test_bad_inputs import _png
    from texter_jax.cli.main import main

    root = tmp_path_factory.mktemp("page")
    for i in range(6):
        _png(root / "imgs" / f"im{i}.png", seed=i)
    (root / "bank.txt").write_text(f"{HOSTILE}\nred disc\nblue square\n")
    out = root / "out"
    argv = ["explain", str(root / "imgs"), "--classifier",
            str(tiny_classifier_folder(root / "clf")), "--clip",
            str(tiny_clip_folder(root / "clip", root)), "--aligner",
            str(aligner_folder(root / "aligner", 16, 12)), "--no-sae", "--steps", "2",
            "--canvas", "32", "--crops", "2", "--map-crops", "2", "--ig-steps", "2",
            "--bank", str(root / "bank.txt"), "--out", str(out)]
    assert main(argv) == 0
    return out


def test_explain_writes_a_page_of_cards(explained):
    page = (explained / "index.html").read_text()
    assert page.count('<div class="card') == 6
    for name in (f"im{i}" for i in range(6)):
        assert f'src="{name}/input.png"' in page and f'src="{name}/concept.png"' in page
        assert (explained / name / "concept.png").is_file()
    assert "http://" not in page and "https://" not in page  # nothing fetched at view time


@needs_chromium
def test_explain_page_in_a_browser(explained, tmp_path):
    page = explained / "index.html"
    dom, log = _dom(page.as_uri() + "#sort=prob-asc", tmp_path)
    assert "Uncaught" not in log, log[-2000:]
    cards = _cards(dom)
    assert len(cards) == 6 and not any(c["hidden"] for c in cards)
    probs = [float(c["prob"]) for c in cards]
    assert probs == sorted(probs)  # the sort control, applied from the URL
    assert "6 of 6 cards" in dom
    # the hostile concept is text in every card, never an element
    assert dom.count("&lt;img src=x onerror=alert(1)&gt;") == 6
    assert '<img src="x"' not in dom
    first_class = cards[0]["pred"]
    dom, _ = _dom(page.as_uri() + "#filter=class%3A" + first_class, tmp_path)
    shown = [c for c in _cards(dom) if not c["hidden"]]
    assert shown and all(c["pred"] == first_class for c in shown)
    shot = tmp_path / "shot.png"
    proc = _chromium(page, tmp_path, "--window-size=1280,900", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 5000, proc.stderr[-1000:]


def test_a_thousand_cards(tmp_path):
    """Size and build time of a 1,000-card page (synthetic records), printed with -s."""
    cards = [Card(name=f"img_{i:04d}.jpg", image=f"img_{i:04d}/input.png",
                  concept=f"img_{i:04d}/concept.png", pred=f"class {i % 37}",
                  prob=(i * 7919 % 1000) / 1000, correct=bool(i % 3),
                  concepts=[(f"concept {i} {k}", 0.3 - k / 100) for k in range(10)])
             for i in range(1000)]
    t = time.perf_counter()
    path = write_page(tmp_path, title="1000", cards=cards, settings={"n": 1000}, top=5)
    seconds = time.perf_counter() - t
    size = path.stat().st_size
    print(f"1000 cards: {size / 1e6:.2f} MB, built in {seconds:.3f} s")
    assert size < 3e6 and path.read_text().count('<div class="card') == 1000



def test_eval_page(tmp_path):
    """`texter eval`'s page (chance floor and Text-to-Concept on six images in two class
    folders): a card per record, the summary on top, the misclassified + method filters
    in a browser."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.helpers import aligner_folder, tiny_classifier_folder, tiny_clip_folder
    from tests.test_bad_inputs import _eval, _png
    from texter_jax.cli.main import main

    root = tmp_path / "run"

    for c in range(2):
        for i in range(3):
            _png(root / "imgs" / f"class_{c}" / f"im{i}.png", seed=10 * c + i)
    p = {"imgs": str(root / "imgs"), "clf": str(tiny_classifier_folder(root / "clf")),
         "clip": str(tiny_clip_folder(root / "clip", root)),
         "aligner": str(aligner_folder(root / "aligner", 16, 12)), "sae": ""}
    out = root / "eval"
    argv = [a.replace("{out}", str(out)) for a in _eval(p, "--methods", "random,text2concept")]
    argv = [a for a in argv if a not in ("--sae", "")]
    assert main(argv) == 0
    page = (out / "index.html").read_text()
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert page.count('<div class="card') == len(records) == 12
    assert "<table>" in page and 'src="curves.png"' not in page  # --no-plots
    assert len(list((out / "thumbs").glob("*.png"))) == 6
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    dom, log = _dom((out / "index.html").as_uri() + "#filter=misclassified&method=random",
                    tmp_path)
    assert "Uncaught" not in log
    shown = [c for c in _cards(dom) if not c["hidden"]]
    wrong = sum(1 for r in records if r["correct"] is False and r["method"] == "random")
    assert len(shown) == wrong and all(c["correct"] == "0" and c["method"] == "random"
                                       for c in shown)
