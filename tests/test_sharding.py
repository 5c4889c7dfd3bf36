"""The work of ``explain_batch`` really splits over 4 host devices: every stage's compiled
program holds no collective, its outputs have one [B/4] shard per device, nothing is
read to the host between stages (a device-to-host transfer guard is on), retry rounds
run in buckets that split too, and MACO's per-device memory at batch 4b equals one
device's at batch b. The findings come from ``tests/multi_device_probe.py`` run in a
fresh process (the device count is fixed when JAX starts)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
N_DEVICES = 4
BATCH = 8


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "found.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={N_DEVICES}")
    proc = subprocess.run([sys.executable, "-m", "tests.multi_device_probe", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def _assert_split(layout, what):
    assert layout["rows"] == [BATCH // N_DEVICES] * N_DEVICES, (what, layout)
    assert layout["devices"] == list(range(N_DEVICES)), (what, layout)


@pytest.mark.parametrize("case", ["sae_units", "class_logit", "retry"])
def test_every_stage_splits_the_batch(found, case):
    assert found["devices"] == N_DEVICES
    report = found[case]
    for program in ("stage1", "maco", "stage3", "retrieve"):
        assert report[program], f"{program} never ran"
        for call in report[program]:
            assert not any(call["collectives"].values()), (program, call["collectives"])
            assert call["host_transfers"] == 0, program
            for layout in call["outputs"]:
                if layout["shape"][0] == BATCH:
                    _assert_split(layout, program)
                else:  # a retry round: a bucket of rows, split too
                    n = layout["shape"][0]
                    assert n % N_DEVICES == 0 and layout["rows"] == [n // N_DEVICES] * N_DEVICES
    # what explain_arrays hands back: every array split along the batch
    for layout in report["arrays"]:
        _assert_split(layout, "explain_arrays")


def test_retry_rounds_rerun_only_the_images_that_need_it(found):
    report = found["retry"]
    dead = report["predicted_dead"]
    assert any(dead) and not all(dead)
    # a constant logit has no gradient: those images are re-run up to max_retries (2)
    assert report["retries"] == [2 if d else 0 for d in dead]
    # two explain calls (explain_arrays, explain_batch), each a first run + 2 rounds
    assert len(report["maco"]) == 6
    for call in report["maco"]:
        n = call["outputs"][0]["shape"][0]
        assert n % N_DEVICES == 0


def test_maco_memory_per_device_follows_the_per_device_batch(found):
    one, many = found["memory"]["1x2"], found["memory"][f"{N_DEVICES}x{2 * N_DEVICES}"]
    assert abs(many["temp"] - one["temp"]) <= 0.1 * one["temp"], found["memory"]
    assert many["output"] == one["output"]


def test_aligner_sgd_is_data_parallel_and_equals_one_device(found):
    import jax
    import numpy as np

    from tests.multi_device_probe import aligner_data
    from texter_jax.train.aligner import fit_sgd

    x, y = aligner_data()
    w, b, losses = fit_sgd(x, y, key=jax.random.key(0), epochs=3, batch_size=30)
    got = found["aligner"]
    # 30 rows per batch, padded to 32 for 4 devices with zero-weight rows; the gradient
    # is the sum of the devices' shares: fp32 rounding apart, one device's result
    np.testing.assert_allclose(got["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["b"], b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["losses"], losses, rtol=1e-5)


def test_feature_forward_splits_the_batch(found):
    import jax.numpy as jnp
    import numpy as np

    from tests.test_explain import _setup

    _assert_split(found["features"]["layout"], "features")
    clf, v, _, _, _, images = _setup()
    images = np.concatenate([images, images[::-1], images[:2]])
    x = (images * 255).astype(np.uint8).astype(np.float32) / 255.0
    np.testing.assert_allclose(found["features"]["z"], clf.features(v, jnp.asarray(x)),
                               atol=1e-5)


def test_two_processes_each_split_their_share_over_their_devices(tmp_path):
    """2 processes x 2 host devices (jax.distributed, loopback coordinator): each
    process's MACO result lives on both of its own devices, and the explanations equal
    one process's."""
    import socket

    import numpy as np

    import texter_jax.explain as ex
    from tests.multi_device_probe import eight_images
    from tests.test_explain import CONFIG

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    outs = [tmp_path / f"p{i}.npz" for i in range(2)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.two_process_probe", f"127.0.0.1:{port}", str(i),
         str(outs[i])], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    clf, v, sae, al, text, images = eight_images()
    one = ex.explain_batch(clf, v, al, text, images, ex.image_keys(3, range(8)), CONFIG,
                           sae=sae)
    for out in outs:
        got = np.load(out)
        assert got["devices"].tolist() == got["local"].tolist() and len(got["local"]) == 2
        assert got["rows"].tolist() == [2, 2]  # 4 images, 2 per device
        mine = got["mine"]
        np.testing.assert_array_equal(got["units"], one.unit_ids[mine])
        np.testing.assert_allclose(got["image"], one.concept_image[mine], atol=1e-4)
        np.testing.assert_allclose(got["scores"], one.concept_scores[mine], atol=1e-4)
    assert sorted(np.concatenate([np.load(o)["mine"] for o in outs]).tolist()) == list(range(8))


@pytest.mark.parametrize("variant", ["topk", "auxk", "batchtopk"])
def test_sae_training_step_is_data_parallel_and_equals_one_device(found, variant):
    import numpy as np

    from tests.multi_device_probe import sae_steps

    auxk = variant == "auxk"
    one = sae_steps(auxk=auxk, batch_topk=variant == "batchtopk")
    got = found["sae" if variant == "topk" else f"sae_{variant}"]
    if variant == "batchtopk":  # the batch's top k * B over all 4 devices, exactly
        np.testing.assert_allclose(got["threshold_sum"], one["threshold_sum"], rtol=1e-5)
    if auxk:
        assert one["aux"] > 0  # latents died and the AuxK loss ran
        np.testing.assert_allclose(got["aux"], one["aux"], rtol=1e-5)
        assert got["since"] == one["since"]
    np.testing.assert_allclose(got["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose([got["r2"], got["l0"]], [one["r2"], one["l0"]], rtol=1e-5)
    assert got["alive"] == one["alive"]
    np.testing.assert_allclose(got["dictionary"], one["dictionary"], atol=1e-5)
