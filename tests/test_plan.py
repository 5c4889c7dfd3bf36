"""The planner on this machine's backend: the chip table, the HLO reader on hand-written
HLO, batch sizes from compiled memory (``auto_batch``; the session's in test_session.py),
and ``texter plan`` on a converted folder."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_explain import CONFIG, _setup
from texter_jax.plan import (
    CHIPS,
    BatchTooLarge,
    ExplainSpec,
    auto_batch,
    chip_of_kind,
    local_target,
    memory_facts,
)
from texter_jax.plan.hlo import executions, trip_count

REPO = Path(__file__).resolve().parents[1]

HLO = """HloModule m

%inner_body (p: (s32[], f32[])) -> (s32[], f32[]) {
  %p = (s32[], f32[]) parameter(0)
  %r = f32[] recv(%t), channel_id=1, is_host_transfer=true
  ROOT %x = (s32[], f32[]) tuple(%a, %b)
}

%inner_cond (p: (s32[], f32[])) -> pred[] {
  %c = s32[] constant(3)
  %g = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%g, %c), direction=LT
}

%outer_body (p: (s32[], f32[])) -> (s32[], f32[]) {
  %w = (s32[], f32[]) while(%p), condition=%inner_cond, body=%inner_body
  %ar = f32[] all-reduce(%v), to_apply=%add
  ROOT %x = (s32[], f32[]) tuple(%a, %b)
}

%outer_cond (p: (s32[], f32[])) -> pred[] {
  %c = s32[] constant(5)
  %g = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%g, %c), direction=LT
}

ENTRY %main (a: f32[]) -> f32[] {
  %w = (s32[], f32[]) while(%t), condition=%outer_cond, body=%outer_body
  %s = f32[] send(%a, %tok), channel_id=2, is_host_transfer=true
  ROOT %o = f32[] get-tuple-element(%w), index=1
}
"""


def test_hlo_reader_multiplies_nested_loops():
    assert trip_count(["  %c = s32[] constant(7)",
                       "  ROOT %lt = pred[] compare(%g, %c), direction=LT"]) == 7
    assert executions(HLO, r"\brecv\(") == 15  # 5 outer x 3 inner
    assert executions(HLO, r"all-reduce\(") == 5
    assert executions(HLO, r"\bsend\(") == 1


def test_chip_table():
    assert chip_of_kind("TPU v5 lite") is CHIPS["v5e"]
    assert chip_of_kind("NVIDIA H100 80GB HBM3") is CHIPS["h100"]
    assert chip_of_kind("cpu") is None
    assert CHIPS["v5e"].hbm_bytes == 16 * 2 ** 30
    assert CHIPS["h100"].flops_for("float32") < CHIPS["h100"].flops_for("bfloat16")


@pytest.fixture(scope="module")
def tiny():
    from texter_jax.sae import SaeConfig

    clf, v, sae, al, text, images = _setup()
    d = clf.feature_dim
    spec = ExplainSpec(clf, v, CONFIG, SaeConfig(input_dim=d, nb_concepts=4 * d,
                                                 top_k=d // 2), 12, 20)
    return spec, (clf, v, sae, al, text, images)


def test_auto_batch_is_the_largest_that_fits(tiny):
    spec, _ = tiny
    here = local_target()
    peak = {b: max(f.peak for f in memory_facts(spec, here, b).values()) for b in (3, 4)}
    assert peak[4] > peak[3]
    # a device that holds 3 images' programs at 80 %, not 4
    small = dataclasses.replace(here, memory_bytes=(peak[3] + peak[4]) / 2 / 0.8)
    choice = auto_batch(spec, target=small, images=100)
    assert choice.per_device == 3 and choice.batch == 3 * here.n_devices
    assert choice.peak_bytes == peak[3] and "batch size 3" in choice.describe()
    assert auto_batch(spec, target=small, images=2).batch == 2  # never more than needed
    tiny_dev = dataclasses.replace(here, memory_bytes=1000.0)
    with pytest.raises(BatchTooLarge, match=r"one image per device needs \d+\.\d+ GiB"):
        auto_batch(spec, target=tiny_dev)


def test_texter_plan_cli_on_a_folder(tmp_path):
    from tests.helpers import tiny_classifier_folder

    folder = tiny_classifier_folder(tmp_path / "clf")
    out = tmp_path / "plan.json"
    proc = subprocess.run(
        [sys.executable, "-m", "texter_jax.cli", "plan", "--classifier", str(folder), "--local",
         "--batch", "1", "2", "--canvas", "48", "--steps", "4", "--crops", "2",
         "--map-crops", "2", "--ig-steps", "8", "--clip-dim", "12", "--texts", "20",
         "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ESTIMATE" in proc.stdout and "not a measurement" in proc.stdout
    import json

    rows = json.loads(out.read_text())
    assert [r["batch_per_device"] for r in rows] == [1, 2]
    for r in rows:
        assert r["target"] == "cpu" and r["fits"] is True
        assert set(r["programs"]) == {"stage1", "maco", "stage3", "retrieve"}
        assert r["per_image"]["flops"] > 0
        assert all(p["host_transfers"] == 0 for p in r["programs"].values())
    bad = subprocess.run([sys.executable, "-m", "texter_jax.cli", "plan", "--tpu", "v9z:1x1"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "v9z:1x1" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
