"""`texter demo` at tiny settings: every stage runs on real world data, outputs have the
right shapes, the reader controls and diagnostics are reported, explanations are
reproducible for a seed, and a rerun hits the cache. No assertion on hit rates: at these
sizes they measure nothing."""

import json
import shutil

import numpy as np
import pytest

from texter_jax.world import DISCRETE
from texter_jax.world.demo import WorldDemo
from texter_jax.world.demo_config import METHODS, DemoConfig


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(out=str(out)).tiny()
    report = WorldDemo(cfg, log=lambda s: None).run()
    return cfg, out, report


def test_report_and_results(demo):
    cfg, out, report = demo
    text = report.read_text()
    assert "## Hit rates" in text and (out / "examples.png").stat().st_size > 5000
    res = json.loads((out / "results.json").read_text())
    assert set(res["hits"]) == {"shape", "shape_shortcut", "colour", "badge"}
    for name, per_method in res["hits"].items():
        assert set(per_method) == set(METHODS)
        for m in per_method.values():
            assert m["hit@1"]["n"] == cfg.explain_images
            assert 0 <= m["hit@1"]["rate"] <= m["hit@3"]["rate"] <= 1
        # the truth was measured, not assumed: an attribute the world intervenes on
        assert res["critical"][name] in ("shape", "colour", "pattern", "background", "size",
                                         "badge", "position", "rotation")
        # reader controls: (a) the tiled inputs (the upsampled ones as a diagnostic),
        # (b) value canvases of every value
        ctl = res["controls"][name]
        for kind in ("tiled", "upsampled"):
            assert ctl[kind]["hit@3"]["n"] == cfg.explain_images
            assert 0 <= ctl[kind]["hit@1"]["rate"] <= ctl[kind]["hit@3"]["rate"] <= 1
        if ctl["values"] is not None:
            values = DISCRETE[res["critical"][name]]
            assert ctl["values"]["hit@3"]["n"] == cfg.control_canvases * len(values)
            assert set(ctl["per_value"]) == set(values)
            assert np.mean(list(ctl["per_value"].values())) == pytest.approx(
                ctl["values"]["hit@3"]["rate"])
        # diagnostics: the value read on (a), the world CLIP on the same crops and on
        # the whole images
        assert ctl["tiled_value_read"]["n"] == cfg.explain_images
        # and the share of (a)'s crops that show the attribute by the world's rules: the
        # colour of a tiled image is in every crop, a size never is
        shows = ctl["tiled_crops_show"]
        assert shows["n"] == cfg.explain_images and 0 <= shows["rate"] <= 1
        if res["critical"][name] == "colour":
            assert shows["rate"] > 0.9
        for kind in ("clip_tiled", "clip_whole"):
            assert ctl[kind]["hit@3"]["n"] == cfg.explain_images
            assert 0 <= ctl[kind]["hit@1"]["rate"] <= ctl[kind]["hit@3"]["rate"] <= 1
        assert (ctl["clip_values"] is None) == (ctl["values"] is None)
        assert ctl["passed"] == (ctl["values"] is not None and min(
            ctl["tiled"]["hit@3"]["rate"], ctl["values"]["hit@3"]["rate"]) >= 0.8)
        acc = res["classifier_accuracy"][name]
        assert 0 <= acc["test_accuracy"] <= 1 and 0 <= acc["mosaic_test_accuracy"] <= 1
        cons = res["class_consistency"][name]
        assert set(cons) == set(METHODS) - {"text2concept"}
        assert all(0 <= c["rate"] <= 1 and c["n"] == cfg.explain_images for c in cons.values())
    assert set(res["clip_zero_shot"]) == set(DISCRETE) == set(res["clip_zero_shot_views"])
    assert set(res["clip_zero_shot_mosaics"]) == set(DISCRETE)
    # the report opens in plain words, one line per classifier saying whether its row is
    # a measurement, then puts the reader controls before any hit rate
    plain = text[text.index("## In plain words"):text.index("## Reader controls")]
    for name, ctl in res["controls"].items():
        verdict = "so this row is a measurement" if ctl["passed"] else "controls **failed**"
        assert f"- **{name}** (decides on {res['critical'][name]})" in plain
        line = plain.split(f"- **{name}**")[1].split("\n")[0]
        assert verdict in line
        # a failing control says where the reader fails, with the diagnostics' numbers
        if ctl["tiled"]["hit@3"]["rate"] < 0.8:
            assert f"in {ctl['tiled_value_read']['rate']:.2f} of images" in line
            assert f"{ctl['tiled_crops_show']['rate']:.2f} of those crops show" in line
        if ctl["values"] is not None and ctl["values"]["hit@3"]["rate"] < 0.8:
            assert f"reaches {ctl['clip_values']['hit@3']['rate']:.2f} on the same" in line
    assert text.index("## In plain words") < text.index("## Reader controls") < text.index(
        "### Where a control fails") < text.index("## Hit rates")
    for stack in res["stack"].values():
        assert np.isfinite(stack["aligner"]["holdout_r2"])
        assert np.isfinite(stack["sae"]["r2"]) and stack["sae"]["l0"] > 0


def test_explanations_are_real(demo):
    cfg, out, _ = demo
    cache = out / "cache" / "explanations"
    first = {p.name: dict(np.load(p)) for p in cache.glob("*.npz")}
    assert len(first) == 4 * len(METHODS)
    for rec in first.values():
        s = rec["scores"]
        assert s.shape[0] == cfg.explain_images and np.all(np.isfinite(s))
        assert np.ptp(s, axis=1).min() > 0  # concepts are told apart on every image
        if "concept_image" in rec:
            img = rec["concept_image"]
            assert img.shape[1:] == (cfg.canvas, cfg.canvas, 3)
            assert img.std() > 0.01 and rec["transparency"].max() > 0


def test_demo_page(demo, tmp_path):
    """index.html: every held-out image x classifier x method is a card with its hit mark
    (hit@3 against the measured truth, as results.json counts them); in a browser the
    page has no console error and the hit filter shows exactly the hits."""
    from tests.test_pages import CHROMIUM, _cards, _dom

    cfg, out, _ = demo
    page = (out / "index.html").read_text()
    res = json.loads((out / "results.json").read_text())
    n = 4 * len(METHODS) * cfg.explain_images
    assert page.count('<div class="card') == n
    hits = page.count('<div class="card hit"')
    want = sum(round(m["hit@3"]["rate"] * m["hit@3"]["n"]) for per in res["hits"].values()
               for m in per.values())
    assert hits == want and page.count('<div class="card miss"') == n - hits
    assert "<table>" in page and "Hit rates" in page  # the report's tables on top
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    dom, log = _dom((out / "index.html").as_uri() + "#filter=hit", tmp_path)
    assert "Uncaught" not in log
    shown = [c for c in _cards(dom) if not c["hidden"]]
    assert len(shown) == hits and all(c["hit"] == "1" for c in shown)


def test_rerun_is_identical_and_bf16_rows_sit_next_to_float32(demo, tmp_path):
    """A second run with the same seed and no cached explanations (the trained models come
    from the cache) recomputes every explanation to identical numbers; its --bf16 adds
    TEXTER with a bfloat16 MACO pass on the same images, reported beside float32: same
    predictions and units (stage 1 stays float32), other concept images."""
    import dataclasses

    cfg, out, _ = demo
    again = tmp_path / "demo_bf16"
    shutil.copytree(out, again)
    shutil.rmtree(again / "cache" / "explanations")
    report = WorldDemo(dataclasses.replace(cfg, out=str(again), bf16=True),
                       log=lambda s: None).run()
    first = {p.name: dict(np.load(p)) for p in (out / "cache" / "explanations").glob("*.npz")}
    second = {p.name: dict(np.load(p))
              for p in (again / "cache" / "explanations").glob("*.npz")
              if "_texter-bf16_" not in p.name}
    assert second.keys() == first.keys()
    for name in first:
        for k in first[name]:
            np.testing.assert_array_equal(first[name][k], second[name][k], err_msg=name + k)
    assert "## bfloat16 against float32" in report.read_text()
    res = json.loads((again / "results.json").read_text())
    before = json.loads((out / "results.json").read_text())
    for name, per_method in res["hits"].items():
        assert set(per_method) == set(METHODS) | {"texter-bf16"}
        assert per_method["texter-bf16"]["hit@1"]["n"] == cfg.explain_images
        assert per_method["texter"] == before["hits"][name]["texter"]  # same f32 rows
    cache = again / "cache" / "explanations"
    for path in cache.glob("*_texter-bf16_*.npz"):
        name = path.name.split("_texter-bf16_")[0]
        (f32_path,) = cache.glob(f"{name}_texter_*.npz")
        b16, f32 = dict(np.load(path)), dict(np.load(f32_path))
        np.testing.assert_array_equal(b16["label"], f32["label"])
        np.testing.assert_array_equal(b16["unit_ids"], f32["unit_ids"])
        assert np.all(np.isfinite(b16["scores"]))
        assert not np.array_equal(b16["concept_image"], f32["concept_image"])
    assert len(list(cache.glob("*_texter-bf16_*.npz"))) == 4
