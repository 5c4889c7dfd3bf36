"""``explain``'s programs compile for TPU slices with the real XLA TPU compiler (libtpu,
test extra; no TPU needed): a small ResNet + TopK SAE, split over v5e:2x2 and over one
host of the 4-host v5e:4x4, as ``explain`` splits them. Checked on the compiled
programs: no host transfer and no collective in any of them; with progress on, MACO
talks to the host ceil(steps / N) times per run; per-chip memory at 4 chips x b equals
one chip's at b (the batch really splits); MACO's cost model grows linearly with its
written-out steps; the SAE's training steps (release, AuxK, BatchTopK) compile data
parallel."""

import importlib.util
import math

import jax
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="libtpu (the TPU compiler) is not installed")

TOPOLOGIES = ("v5e:2x2", "v5e:4x4")
STEPS = 8


@pytest.fixture(scope="module")
def spec():
    from texter_jax.config import ExplainConfig, MacoConfig
    from texter_jax.models.registry import abstract_variables
    from texter_jax.models.resnet import ResNetConfig, make_classifier
    from texter_jax.plan import ExplainSpec
    from texter_jax.sae import SaeConfig

    clf = make_classifier(ResNetConfig(block="basic", depths=(1, 1), widths=(8, 16),
                                       stem_width=8, num_classes=5, image_size=32))
    cfg = ExplainConfig(k_neu=3, ig_steps=8, ranked_units=6, map_crops=2,
                        maco=MacoConfig(canvas=64, steps=STEPS, crop_size=32, n_crops=2))
    sae = SaeConfig(input_dim=16, nb_concepts=64, top_k=8)
    return ExplainSpec(clf, abstract_variables(clf), cfg, sae, clip_dim=12, n_texts=20)


@pytest.fixture(scope="module", params=TOPOLOGIES)
def any_target(request):
    """v5e:2x2 (one host) and v5e:4x4 (four hosts of 4 chips: host 0's programs)."""
    from texter_jax.plan import tpu_target

    return tpu_target(request.param)


@pytest.fixture(scope="module")
def target():
    """One host's programs are the same on any v5e slice: the detailed checks run once."""
    from texter_jax.plan import tpu_target

    return tpu_target(TOPOLOGIES[0])


def test_topologies_are_one_host_of_the_slice(any_target):
    target = any_target
    assert target.chip.name == "v5e" and target.n_devices == 4
    assert target.hosts == (1 if target.name == "v5e:2x2" else 4)
    assert len({d.process_index for d in target.devices}) == 1
    assert len(target.slice_devices) == 4 * target.hosts


def test_programs_compile_without_host_transfers_or_collectives(spec, any_target):
    from texter_jax.plan import memory_facts

    found = memory_facts(spec, any_target, 2)
    assert set(found) == {"stage1", "maco", "stage3", "retrieve"}
    for name, f in found.items():
        assert f.host_transfers == 0, name
        assert not any(f.collectives.values()), (name, f.collectives)
        assert f.flops > 0 and f.temp >= 0


@pytest.mark.parametrize("every", [3, 4])
def test_progress_reports_ceil_steps_over_n_times(spec, target, every):
    from texter_jax.plan import facts, lower_explain
    from texter_jax.plan.hlo import executions

    lowered = lower_explain(spec, target.placement, 2, maco_every=every, only=("maco",))
    hlo = lowered["maco"].compile().as_text()
    # one report = the callback's sends and one recv
    assert executions(hlo, r"\brecv\(.*is_host_transfer=true") == math.ceil(STEPS / every)
    quiet = facts("maco", 2, lower_explain(spec, target.placement, 2, only=("maco",))["maco"])
    assert quiet.host_transfers == 0


@pytest.fixture(scope="module")
def plan(spec, target):
    from texter_jax.plan import plan_explain

    return plan_explain(spec, target, 2)


def test_batch_splits_per_chip_memory(spec, target, plan):
    """Per chip, 4 chips at 4 x b hold what one chip holds at b (b = 2 per chip)."""
    from texter_jax.batching import placement_over
    from texter_jax.plan import facts, lower_explain

    one = placement_over(target.devices[:1])
    for name in ("stage1", "maco", "stage3"):
        many = plan.memory[name]
        single = facts(name, 2, lower_explain(spec, one, 2, only=(name,))[name])
        assert abs(many.temp - single.temp) <= 0.1 * max(single.temp, 1), name
        assert abs(many.flops - single.flops) <= 0.01 * single.flops, name


def test_maco_cost_grows_linearly_with_written_out_steps(spec, target, plan):
    """The plan prices a step from 1 and 2 written-out steps; 3 steps cost one more,
    and the rolled loop of 8 steps is counted as one step by the cost model."""
    from texter_jax.plan import facts, lower_explain

    step, rest = plan.maco_step, plan.maco_rest
    assert step.flops > 0 and step.bytes > 0
    low = lower_explain(spec, target.placement, 2, unroll=True, maco_steps=3,
                        only=("maco",))["maco"]
    np.testing.assert_allclose(facts("maco", 2, low).flops, rest.flops + 3 * step.flops,
                               rtol=0.01)
    assert plan.memory["maco"].flops == pytest.approx(rest.flops + step.flops, rel=0.02)


def test_plan_estimates_from_the_compiled_programs(target, plan):
    assert plan.fits and plan.peak_bytes == max(f.peak for f in plan.memory.values())
    # MACO's cost: rest + steps x step, and most of the work
    maco = plan.costs["maco"]
    assert maco.flops == pytest.approx(plan.maco_rest.flops + STEPS * plan.maco_step.flops)
    assert maco.flops > plan.costs["stage1"].flops
    chip = target.chip
    expect = 60 * 2 / plan.seconds
    assert plan.images_per_minute_per_device == pytest.approx(expect)
    assert plan.images_per_minute == pytest.approx(expect * 4 * target.hosts)
    # the roofline: never faster than either peak allows
    per = plan.per_image
    assert plan.seconds / 2 >= max(per.flops / chip.bf16_flops, per.bytes / chip.hbm_bytes_per_s)


def _lowered_sae_step(target, aux=None, batch_topk=False):
    """The SAE training step (64 -> 512 latents, k = 32, 256 rows per device) lowered for
    ``target``'s whole slice: every host's devices add their gradients."""
    import jax.numpy as jnp

    from texter_jax.plan import facts
    from texter_jax.sae import SaeConfig, init_sae
    from texter_jax.train.sae_step import aux_state, batch_topk_state
    from texter_jax.train.sae_train import (
        SaeTrainConfig,
        _zero_acc,
        make_optimizer,
        make_train_step,
    )

    cfg = SaeConfig(input_dim=64, nb_concepts=512, top_k=32)
    tx = make_optimizer(SaeTrainConfig())

    def fresh():
        params = init_sae(jax.random.key(0), cfg)
        state = {"params": params, "opt_state": tx.init(params), "acc": _zero_acc(512),
                 "rng": jax.random.key_data(jax.random.key(0))}
        if aux is not None:
            state.update(aux_state(512))
        if batch_topk:
            state.update(batch_topk_state())
        return state

    placement = target.slice_placement
    rep = placement.replicated
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                         jax.eval_shape(fresh))
    x = jax.ShapeDtypeStruct((placement.n_devices * 256, 64), jnp.float32,
                             sharding=placement.batch)
    step = make_train_step(tx, cfg.top_k, placement, aux, batch_topk)
    return facts("sae_step", 256, step.program.lower(state, x))


def test_sae_training_step_compiles_data_parallel(any_target):
    f = _lowered_sae_step(any_target)
    # data parallel: the gradient and metric sums are the only collectives
    assert f.collectives["all-reduce"] >= 1
    assert not any(v for k, v in f.collectives.items() if k != "all-reduce")
    assert f.host_transfers == 0


@pytest.mark.parametrize("variant", ["auxk", "batchtopk"])
def test_auxk_and_batchtopk_steps_compile_data_parallel(target, variant):
    """The AuxK and BatchTopK steps compile for the slice too: AuxK adds no collective
    (its dead-latent counters are updated from the all-reduced firing mask); BatchTopK
    adds exactly the one all-gather of each device's top codes for the global
    threshold."""
    from texter_jax.train.sae_step import AuxK

    aux = AuxK(k_aux=64, dead_after=1024) if variant == "auxk" else None
    f = _lowered_sae_step(target, aux=aux, batch_topk=variant == "batchtopk")
    assert f.collectives["all-reduce"] >= 1 and f.host_transfers == 0
    others = {k: v for k, v in f.collectives.items() if k != "all-reduce" and v}
    assert others == ({} if variant == "auxk" else {"all-gather": 1}), others


def test_maco_image_uses_dense_dft_on_tpu_and_the_fft_on_cpu(target):
    import jax.numpy as jnp

    from texter_jax.batching import placement_over
    from texter_jax.emphasis.param import phase_to_image, spectrum_shape

    def hlo(sharding):
        x = jax.ShapeDtypeStruct(spectrum_shape(128), jnp.float32, sharding=sharding)
        return jax.jit(jax.grad(lambda p, m: phase_to_image(p, m).sum())).lower(
            x, x).compile().as_text()

    tpu = hlo(placement_over(target.devices[:1]).replicated)
    cpu = hlo(placement_over(jax.devices()[:1]).replicated)
    assert " fft(" not in tpu and ("convolution(" in tpu or "dot(" in tpu)
    assert " fft(" in cpu
