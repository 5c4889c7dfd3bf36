"""The bad-input corpus: every `texter` command against broken files, parts that do not
fit together and unwritable outputs. Each case expects exit code 2 (or the documented
one), one error line on stderr that names the file or part at fault, no traceback, and
no output left behind (a previous run's files untouched).

``TEXTER_BAD_INPUT_TABLE=docs/bad_inputs_table.md ./dev test tests/test_bad_inputs.py`` writes
the case -> message table of docs/bad_inputs.md (paths cut to their last component).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.helpers import aligner_folder, sae_folder, tiny_classifier_folder, tiny_clip_folder  # noqa: E402
from texter_jax.cli.main import main  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: ``argv(paths)`` builds the command; ``needle`` must appear in the
    error line (a file name, key or flag); ``out`` is the output path that must not be
    created or changed (relative to the case folder), or None when the output is an
    existing folder of the world, named by ``kept``, that must stay as it was; ``code``
    the exit code."""

    command: str
    name: str
    argv: Callable[[dict], list[str]]
    needle: str
    out: str | None = "out"
    code: int = 2
    kept: str | None = None


def _png(path: Path, size=32, seed=0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Good parts (tiny models, images, features) and broken files, built once."""
    root = tmp_path_factory.mktemp("bad")
    p = {"root": root}
    p["clf"] = tiny_classifier_folder(root / "clf")  # 16 features, 5 classes, 32 px
    p["clip"] = tiny_clip_folder(root / "clip", root)  # embeds in 12
    p["aligner"] = aligner_folder(root / "aligner", 16, 12)
    p["aligner_8"] = aligner_folder(root / "aligner_8", 8, 12)
    p["aligner_to_8"] = aligner_folder(root / "aligner_to_8", 16, 8)
    p["sae"] = sae_folder(root / "sae", 16)
    p["sae_8"] = sae_folder(root / "sae_8", 8)
    for c in range(2):
        for i in range(3):
            _png(root / "imgs" / f"class_{c}" / f"im{i}.png", seed=10 * c + i)
    p["imgs"] = root / "imgs"
    (root / "empty_dir").mkdir()
    p["empty_dir"] = root / "empty_dir"
    # broken files of every kind
    (root / "garbage.pth").write_bytes(os.urandom(300))
    (root / "empty.pth").write_bytes(b"")
    torch.manual_seed(0)
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None, num_classes=3).state_dict(),
               root / "resnet18.pth")
    good = root / "good.pth"
    torch.save({"w": torch.zeros(4, 4)}, good)
    (root / "truncated.pth").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (root / "config.pth").write_text(json.dumps({"not": "weights"}))
    (root / "names_3.txt").write_text("a\nb\nc\n")
    (root / "bank_empty.txt").write_text("")
    (root / "bank_odd.txt").write_text("rouge vif\nrouge vif\n" + "très " * 200 + "\n")
    (root / "truth_bad.json").write_text("{not json")
    (root / "a_file").write_text("not a folder")
    p["under_file"] = root / "a_file" / "out"
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("someone else's folder")
    p["foreign"] = root / "foreign"
    (root / "bank_latin1.txt").write_bytes("rouge très vif\n".encode("latin-1"))
    broken_model = root / "broken_model"
    broken_model.mkdir()
    (broken_model / "texter_config.json").write_text("{broken")
    p["broken_model"] = broken_model
    no_tok = root / "clip_no_tokenizer"
    no_tok.mkdir()
    for f in Path(p["clip"]).iterdir():
        if f.name not in ("vocab.json", "merges.txt"):
            os.symlink(f, no_tok / f.name)
    p["clip_no_tok"] = no_tok
    assert main(["extract-features", "--model", str(p["clf"]), "--images", str(p["imgs"]),
                 "--out", str(root / "feats"), "--no-progress"]) == 0
    p["feats"] = root / "feats"
    # a finished eval run (chance floor only: fast), to be resumed with other settings
    assert main([a.replace("{out}", str(root / "eval_run")) for a in _eval(
        {k: str(v) for k, v in p.items()}, "--methods", "random", "--top-k", "3")]) == 0
    p["eval_run"] = root / "eval_run"
    (root / "feats_bad").mkdir()
    (root / "feats_bad" / "manifest.json").write_text("{half")
    p["feats_bad"] = root / "feats_bad"
    return {k: str(v) for k, v in p.items()}


def _explain(p, *extra, clip="clip", aligner="aligner", sae="sae", images="imgs"):
    return ["explain", p[images], "--classifier", p["clf"], "--clip", p[clip],
            "--aligner", p[aligner], "--sae", p[sae], "--steps", "2", "--canvas", "32",
            "--crops", "2", "--map-crops", "2", "--ig-steps", "2", "--no-figures",
            "--out", "{out}", *extra]


def _eval(p, *extra, aligner="aligner", sae="sae"):
    return ["eval", p["imgs"], "--classifier", p["clf"], "--clip", p["clip"],
            "--aligner", p[aligner], "--sae", p[sae], "--steps", "2", "--canvas", "32",
            "--crops", "2", "--map-crops", "2", "--ig-steps", "2", "--sanity", "none",
            "--no-plots", "--n-boot", "20", "--preprocess", "resize", "--out", "{out}",
            *extra]


CASES = [
    # convert: files that are not weights
    Case("convert", "random bytes", lambda p: ["convert", f"{p['root']}/garbage.pth", "{out}"],
         "garbage.pth"),
    Case("convert", "empty file", lambda p: ["convert", f"{p['root']}/empty.pth", "{out}"],
         "empty.pth"),
    Case("convert", "truncated file",
         lambda p: ["convert", f"{p['root']}/truncated.pth", "{out}"], "truncated.pth"),
    Case("convert", "JSON named .pth", lambda p: ["convert", f"{p['root']}/config.pth", "{out}"],
         "config.pth"),
    Case("convert", "missing file", lambda p: ["convert", f"{p['root']}/nope.pth", "{out}"],
         "nope.pth"),
    Case("convert", "foreign tensors", lambda p: ["convert", f"{p['root']}/good.pth", "{out}"],
         "good.pth"),
    # explain: parts that do not fit, broken parts, odd banks
    Case("explain", "aligner for other features", lambda p: _explain(p, aligner="aligner_8"),
         "aligner_8"),
    Case("explain", "SAE for other features", lambda p: _explain(p, sae="sae_8"), "sae_8"),
    Case("explain", "class names count", lambda p: _explain(
        p, "--class-names", f"{p['root']}/names_3.txt"), "names_3.txt"),
    Case("explain", "broken classifier folder", lambda p: [
        a if a != p["clf"] else p["broken_model"] for a in _explain(p)], "broken_model"),
    Case("explain", "missing CLIP folder", lambda p: [
        a if a != p["clip"] else f"{p['root']}/no_clip" for a in _explain(p)], "no_clip"),
    Case("explain", "CLIP without tokenizer files", lambda p: _explain(p, clip="clip_no_tok"),
         "clip_no_tokenizer"),
    Case("explain", "no images", lambda p: _explain(p, images="empty_dir"), "no images"),
    Case("explain", "empty bank file", lambda p: _explain(
        p, "--no-generic", "--bank", f"{p['root']}/bank_empty.txt"), "bank_empty.txt"),
    Case("explain", "missing bank file", lambda p: _explain(
        p, "--bank", f"{p['root']}/no_bank.txt"), "no_bank.txt"),
    Case("explain", "bank not UTF-8", lambda p: _explain(
        p, "--bank", f"{p['root']}/bank_latin1.txt"), "bank_latin1.txt"),
    Case("explain", "aligner for another CLIP", lambda p: _explain(p, aligner="aligner_to_8"),
         "aligner_to_8"),
    Case("explain", "output under a file", lambda p: [
        a if a != "{out}" else p["under_file"] for a in _explain(p)], "a_file"),
    # eval
    Case("eval", "aligner for other features", lambda p: _eval(p, aligner="aligner_8"),
         "aligner_8"),
    Case("eval", "truth file not JSON", lambda p: _eval(
        p, "--truth", f"{p['root']}/truth_bad.json"), "truth_bad.json"),
    Case("eval", "output holds a run with other settings", lambda p: [
        a if a != "{out}" else p["eval_run"] for a in _eval(p, "--methods", "random",
                                                            "--top-k", "4")],
         "other metric settings", out=None, kept="eval_run"),
    Case("extract-features", "output holds other features", lambda p: [
        "extract-features", "--model", p["clf"], "--images", p["imgs"], "--out", p["feats"],
        "--preprocess", "sae", "--no-progress"], "feats", out=None, kept="feats"),
    Case("eval", "unknown method", lambda p: _eval(p, "--methods", "texter,magic"), "magic"),
    # extract-features / train-aligner / train-sae
    Case("extract-features", "broken model folder", lambda p: [
        "extract-features", "--model", p["broken_model"], "--images", p["imgs"],
        "--out", "{out}", "--no-progress"], "broken_model"),
    Case("extract-features", "no images", lambda p: [
        "extract-features", "--model", p["clf"], "--images", p["empty_dir"], "--out", "{out}",
        "--no-progress"], "empty_dir"),
    Case("train-aligner", "features folder broken", lambda p: [
        "train-aligner", "--features", p["feats_bad"], "--targets", p["feats"],
        "--out", "{out}"], "feats_bad"),
    Case("train-sae", "features folder broken", lambda p: [
        "train-sae", "--features", p["feats_bad"], "--out", "{out}", "--no-progress"],
         "feats_bad"),
    Case("train-sae", "output folder of something else", lambda p: [
        "train-sae", "--features", p["feats"], "--out", p["foreign"], "--batch-size", "2",
        "--no-progress"],
         "foreign", out=None, kept="foreign"),
    Case("train-sae", "AuxK over more latents than the SAE has", lambda p: [
        "train-sae", "--features", p["feats"], "--out", "{out}", "--batch-size", "2",
        "--aux-k", "100000", "--no-progress"], "aux_k 100000"),
    Case("train-sae", "BatchTopK into the release's .pth", lambda p: [
        "train-sae", "--features", p["feats"], "--out", "{out}", "--activation", "batchtopk",
        "--export-release", "{out}.pth", "--no-progress"], "--export-release"),
    Case("convert", "output under a file", lambda p: [
        "convert", f"{p['root']}/resnet18.pth", p["under_file"]], "a_file"),
    # spectrum / demo
    Case("spectrum", "output under a file", lambda p: [
        "spectrum", p["imgs"], "--out", f"{p['under_file']}.npy", "--canvas", "32",
        "--no-progress"], "a_file"),
    Case("spectrum", "no images", lambda p: [
        "spectrum", p["empty_dir"], "--out", "{out}.npy", "--no-progress"], "empty_dir",
         out="out.npy"),
    Case("demo", "canvas too small", lambda p: [
        "demo", "--out", "{out}", "--canvas", "1", "--no-progress"], "canvas"),
]


def _snapshot(path: Path) -> dict:
    if not path.exists():
        return {}
    if path.is_file():
        return {path.name: path.stat().st_mtime_ns}
    return {str(f.relative_to(path)): f.stat().st_mtime_ns for f in path.rglob("*")}


def run_case(case: Case, paths: dict, folder: Path, capsys) -> tuple[int, str]:
    out = Path(paths[case.kept]) if case.out is None else folder / case.out
    argv = [a.replace("{out}", str(folder / "out")) for a in case.argv(paths)]
    before = _snapshot(out)
    code = main(argv)
    err = capsys.readouterr().err
    assert _snapshot(out) == before, f"{case.name}: output changed: {out}"
    return code, err


@pytest.mark.parametrize("case", CASES, ids=[f"{c.command}: {c.name}" for c in CASES])
def test_bad_input(case, world, tmp_path, capsys):
    code, err = run_case(case, world, tmp_path, capsys)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert code == case.code and len(lines) == 1, (code, err)
    assert case.needle in lines[0], lines[0]
    _SEEN.append((case.command, case.name, lines[0].strip()))


_SEEN: list[tuple[str, str, str]] = []


def _short(text: str) -> str:
    """Absolute paths cut to their last component, for the table of docs/bad_inputs.md."""
    return re.sub(r"/\S*/([^/\s]+)", r"\1", text)


@pytest.fixture(autouse=True, scope="module")
def _write_table():
    """With TEXTER_BAD_INPUT_TABLE=FILE, writes the case -> message table there."""
    yield
    target = os.environ.get("TEXTER_BAD_INPUT_TABLE")
    if target and _SEEN:
        rows = ["| command | bad input | exit | message |", "|---|---|---|---|"]
        rows += [f"| `{c}` | {n} | 2 | {_short(m).replace('|', '/')} |" for c, n, m in _SEEN]
        Path(target).write_text("\n".join(rows) + "\n")


def test_odd_banks_are_read_not_refused(world, tmp_path, capsys):
    """Duplicates, non-ASCII text and a concept far longer than CLIP's context are fine:
    repeats are dropped, long texts truncated at the context length, nothing refused."""
    out = tmp_path / "out"
    argv = [a.replace("{out}", str(out)) for a in _explain(
        world, "--no-generic", "--bank", f"{world['root']}/bank_odd.txt")]
    assert main(argv) == 0, capsys.readouterr().err
    rec = json.loads(next(out.rglob("results.json")).read_text())
    texts = [t for t, _ in rec["ranked_texts"]]
    assert texts.count("rouge vif") == 1 and len(texts) == 2
    assert any(t.startswith("très très") and len(t) > 900 for t in texts)


def test_a_huge_bank_is_ranked_whole(world, tmp_path, capsys):
    """20,000 concepts: encoded in fixed-size batches through the text cache, all ranked."""
    bank = tmp_path / "huge.txt"
    bank.write_text("\n".join(f"concept number {i}" for i in range(20_000)) + "\n")
    out = tmp_path / "out"
    argv = [a.replace("{out}", str(out)) for a in _explain(
        world, "--no-generic", "--bank", str(bank))]
    assert main(argv) == 0, capsys.readouterr().err
    rec = json.loads(next(out.rglob("results.json")).read_text())
    assert rec["num_concepts_total"] == 20_000 and len(rec["ranked_texts"]) == 20_000
