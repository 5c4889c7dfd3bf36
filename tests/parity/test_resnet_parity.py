"""Parity of the Flax ResNets with torchvision, Hugging Face and DINO-format checkpoints.

Every upstream model is randomly initialised (``torch.manual_seed(0)``), its BatchNorm
statistics calibrated on a random batch and its BN affine parameters randomised, so
that a swapped scale/bias or mean/var shows up; then it is saved in its real on-disk
format under ``tmp_path``, read back with ``texter_jax.converters.state_dict.read_source`` and
converted. Tolerance: max abs difference <= 1e-4 in fp32 (DEVELOPING.md) on features,
logits and every stage's activations (all O(1-10) after calibration).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from texter_jax.classifier import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from texter_jax.converters.mapping import ConversionError  # noqa: E402
from texter_jax.converters.resnet import (  # noqa: E402
    convert_dino_resnet,
    convert_hf_resnet,
    convert_torchvision_resnet,
    detect_layout,
)
from texter_jax.converters.state_dict import read_source  # noqa: E402
from texter_jax.io.checkpoints import load_model, save_model  # noqa: E402

ATOL = 1e-4


def _images(batch: int, size: int, seed: int) -> np.ndarray:
    """float32 [B, S, S, 3] NHWC in [0, 1]."""
    return np.random.default_rng(seed).uniform(size=(batch, size, size, 3)).astype(np.float32)


def _to_torch(images: np.ndarray):
    """[0, 1] NHWC -> ImageNet-normalised NCHW torch tensor (the torch-side preprocessing)."""
    x = (images - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def _residual_branch_bns(model) -> set:
    """The BN closing each residual branch (torchvision bn2/bn3, HF layer[-1])."""
    out = set()
    for m in model.modules():
        name = type(m).__name__
        if name in ("BasicBlock", "Bottleneck"):
            out.add(m.bn3 if hasattr(m, "bn3") else m.bn2)
        elif name in ("ResNetBasicLayer", "ResNetBottleNeckLayer"):
            out.add(m.layer[-1].normalization)
    return out


@torch.no_grad()
def _calibrate_bn(model, size: int, seed: int = 1):
    """Real running statistics (one train-mode pass, cumulative average) and small
    residual-branch BN scales (as in trained ResNets) keep activations O(1) through 50
    layers, so 1e-4 is a meaningful absolute tolerance in fp32; random BN affine
    parameters make scale/bias mix-ups visible."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    branch_ends = _residual_branch_bns(model)
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    # Enough samples per channel even where the last stage is 1x1 (64-pixel inputs).
    model(_to_torch(_images(2 if size >= 224 else 8, size, seed)))
    gen = torch.Generator().manual_seed(seed)
    for bn in bns:
        low, span = (0.1, 0.2) if bn in branch_ends else (0.7, 0.6)
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=gen) * span + low)
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=gen) * 0.1)
        bn.running_var.clamp_(min=0.05)  # a near-constant channel would blow up 1/sqrt(var)
    return model.eval()


def _run_flax(clf, variables, images):
    """Public path (Classifier.features / head) plus the module's named activations."""
    def fn(v, x):
        z = clf.features(v, x)
        _, acts = clf.module.apply(v, clf.normalize(x))
        return z, clf.head(v, z), acts

    return jax.tree.map(np.asarray, jax.jit(fn)(variables, images))


def _max_err(a, b) -> float:
    assert np.shape(a) == np.shape(b), (np.shape(a), np.shape(b))
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def _check(name: str, flax_out, torch_feats, torch_logits, torch_acts: dict):
    z, logits, acts = flax_out
    errs = {"features": _max_err(z, torch_feats), "logits": _max_err(logits, torch_logits)}
    errs.update({k: _max_err(acts[k], v) for k, v in torch_acts.items()})
    print(f"[parity] {name}: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
    assert max(errs.values()) <= ATOL, errs


@torch.no_grad()
def _torchvision_outputs(model, images):
    """(features [B, D], logits [B, C], {stem, stage1..4: NHWC}) via forward hooks."""
    store = {}
    names = {"maxpool": "stem", "layer1": "stage1", "layer2": "stage2", "layer3": "stage3",
             "layer4": "stage4", "avgpool": "features"}
    hooks = [getattr(model, m).register_forward_hook(
        lambda _m, _i, out, n=n: store.__setitem__(n, out)) for m, n in names.items()]
    try:
        logits = model(_to_torch(images)).numpy()
    finally:
        for h in hooks:
            h.remove()
    feats = store.pop("features").flatten(1).numpy()
    return feats, logits, {k: _nhwc(v) for k, v in store.items()}


def _roundtrip(converted, tmp_path):
    """save_model -> load_model; the loaded variables must equal the converted ones."""
    out = save_model(tmp_path / "converted", converted.family, converted.config,
                     converted.variables, source={"layout": converted.layout})
    clf, variables = load_model(out)
    jax.tree.map(np.testing.assert_array_equal, variables, converted.variables)
    assert clf.family == converted.family
    return clf, variables


def _torchvision_case(model, tmp_path, name, *, size, batch=2, roundtrip=True):
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    src = read_source(path)
    assert detect_layout(src.state_dict) == "torchvision-resnet"
    converted = convert_torchvision_resnet(src)
    assert converted.layout == "torchvision-resnet"
    if roundtrip:
        clf, variables = _roundtrip(converted, tmp_path)
    else:
        from texter_jax.models.registry import build_model
        clf, variables = build_model(converted.family, converted.config), converted.variables
    images = _images(batch, size, seed=2)
    _check(name, _run_flax(clf, variables, images), *_torchvision_outputs(model, images))
    return clf


def test_torchvision_resnet18(tmp_path):
    torch.manual_seed(0)
    model = _calibrate_bn(torchvision.models.resnet18(weights=None), 64)
    clf = _torchvision_case(model, tmp_path, "resnet18", size=64)
    assert clf.config.depth == 18 and clf.feature_dim == 512 and clf.num_classes == 1000


def test_torchvision_custom_wide_bottleneck(tmp_path):
    # Bottleneck blocks, uneven depths, 10 classes and a wide_resnet inner width (128 per
    # group -> bottleneck_reduction 2): every inference path of the converter.
    from torchvision.models.resnet import Bottleneck, ResNet

    torch.manual_seed(0)
    model = _calibrate_bn(ResNet(Bottleneck, [1, 2, 1, 1], num_classes=10, width_per_group=128), 64)
    clf = _torchvision_case(model, tmp_path, "wide_bottleneck_1211", size=64, roundtrip=False)
    cfg = clf.config
    assert (cfg.block, cfg.depths, cfg.bottleneck_reduction, cfg.num_classes) == \
        ("bottleneck", (1, 2, 1, 1), 2, 10)


@pytest.fixture(scope="module")
def torch_resnet50():
    torch.manual_seed(0)
    return _calibrate_bn(torchvision.models.resnet50(weights=None), 224)


@pytest.mark.slow
def test_torchvision_resnet50_real_size(torch_resnet50, tmp_path):
    # The save_model/load_model round trip is covered by resnet18 and DINO below.
    clf = _torchvision_case(torch_resnet50, tmp_path, "resnet50@224", size=224,
                            roundtrip=False)
    assert clf.config.depth == 50 and clf.feature_dim == 2048


@pytest.mark.slow
def test_dino_resnet50(torch_resnet50, tmp_path):
    # DINO's release: the backbone without fc, and eval_linear's LinearClassifier saved
    # by DDP inside {"state_dict": {"module.linear.*"}} with training metadata.
    sd = torch_resnet50.state_dict()
    backbone = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    torch.save(backbone, tmp_path / "dino_resnet50_pretrain.pth")
    torch.save({"epoch": 100, "best_acc": 75.3,
                "state_dict": {"module.linear.weight": sd["fc.weight"].clone(),
                               "module.linear.bias": sd["fc.bias"].clone()}},
               tmp_path / "dino_resnet50_linearweights.pth")
    converted = convert_dino_resnet(read_source(tmp_path / "dino_resnet50_pretrain.pth"),
                                    read_source(tmp_path / "dino_resnet50_linearweights.pth"))
    assert (converted.family, converted.layout) == ("dino_resnet", "dino-resnet")
    clf, variables = _roundtrip(converted, tmp_path)
    images = _images(2, 64, seed=3)  # the real-size pass is test_torchvision_resnet50_real_size
    _check("dino_resnet50@64", _run_flax(clf, variables, images),
           *_torchvision_outputs(torch_resnet50, images))


@pytest.mark.parametrize("layer_type,in_bottleneck,first_stage", [
    ("basic", False, False),
    ("bottleneck", False, True),
    ("bottleneck", True, False),
])
def test_hf_resnet(tmp_path, layer_type, in_bottleneck, first_stage):
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 2, 1],
        layer_type=layer_type, downsample_in_bottleneck=in_bottleneck,
        downsample_in_first_stage=first_stage, num_labels=7)
    torch.manual_seed(0)
    model = _calibrate_bn(transformers.ResNetForImageClassification(hf_cfg), 64)
    model.save_pretrained(tmp_path / "hf")
    src = read_source(tmp_path / "hf")
    assert detect_layout(src.state_dict) == "hf-resnet"
    converted = convert_hf_resnet(src)
    from texter_jax.models.registry import build_model
    clf = build_model(converted.family, converted.config)
    assert (clf.config.stride_in_1x1, clf.config.downsample_in_first_stage) == \
        (in_bottleneck, first_stage)

    images = _images(2, 64, seed=4)
    with torch.no_grad():
        out = model(_to_torch(images), output_hidden_states=True)
        pooled = model.resnet(_to_torch(images)).pooler_output.flatten(1).numpy()
    # hidden_states: the stem output, then every stage's output.
    acts = {name: _nhwc(h) for name, h in zip(["stem", "stage1", "stage2", "stage3", "stage4"],
                                              out.hidden_states, strict=True)}
    _check(f"hf {layer_type} in_bottleneck={in_bottleneck} first_stage={first_stage}",
           _run_flax(clf, converted.variables, images), pooled, out.logits.numpy(), acts)


# --------------------------------------------------------------------------- errors


def _small_torchvision_state_dict():
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    return {k: v.numpy() for k, v in ResNet(BasicBlock, [1, 1, 1, 1], num_classes=5)
            .state_dict().items()}


def test_conversion_errors_name_every_problem(tmp_path):
    from texter_jax.converters.state_dict import Source

    sd = _small_torchvision_state_dict()
    del sd["layer2.0.bn1.running_var"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    sd["layer3.0.conv2.weight"] = np.zeros((256, 256, 1, 1), np.float32)
    with pytest.raises(ConversionError) as err:
        convert_torchvision_resnet(Source(sd, "broken.pth"))
    msg = str(err.value)
    for needle in ("broken.pth", "missing keys", "layer2.0.bn1.running_var",
                   "unexpected keys", "extra.weight", "shape mismatches",
                   "layer3.0.conv2.weight", "(256, 256, 1, 1)"):
        assert needle in msg, (needle, msg)

    with pytest.raises(ConversionError, match="expected num_classes=7"):
        convert_torchvision_resnet(Source(_small_torchvision_state_dict(), "x.pth"),
                                   num_classes=7)

    good = _small_torchvision_state_dict()
    head = Source({"module.linear.weight": np.zeros((1000, 1536), np.float32),
                   "module.linear.bias": np.zeros(1000, np.float32)}, "vit_head.pth")
    with pytest.raises(ConversionError, match=r"linear\.weight.*\(1000, 1536\)"):
        convert_dino_resnet(Source(good, "backbone.pth"), head)


def test_hf_config_whitelist():
    from texter_jax.converters.resnet import resnet_config_from_hf

    base = {"model_type": "resnet", "layer_type": "basic", "depths": [1, 1],
            "hidden_sizes": [8, 16], "embedding_size": 8, "id2label": {"0": "a", "1": "b"},
            "transformers_version": "5.24.0"}
    cfg = resnet_config_from_hf(base)
    assert cfg.widths == (8, 16) and cfg.num_classes == 2 and not cfg.stride_in_1x1
    with pytest.raises(ConversionError, match=r"hidden_act='gelu'"):
        resnet_config_from_hf({**base, "hidden_act": "gelu"})
    with pytest.raises(ConversionError, match=r"use_mystery_stem=True \(unknown\)"):
        resnet_config_from_hf({**base, "use_mystery_stem": True})


def test_detect_layout():
    keys = list(_small_torchvision_state_dict())
    assert detect_layout(keys) == "torchvision-resnet"
    assert detect_layout(["module." + k for k in keys]) == "torchvision-resnet"
    assert detect_layout(["resnet.embedder.embedder.convolution.weight"]) == "hf-resnet"
    assert detect_layout(["vit.embeddings.cls_token"]) is None


def test_random_variables_fill_every_leaf():
    from texter_jax.models.resnet import ResNetConfig, make_classifier, random_variables

    clf = make_classifier(ResNetConfig(block="basic", depths=(1, 1), widths=(8, 16),
                                       stem_width=8, num_classes=3, image_size=32))
    a, b = random_variables(clf, seed=0), random_variables(clf, seed=0)
    jax.tree.map(np.testing.assert_array_equal, a, b)  # deterministic per seed
    assert set(a) == {"params", "batch_stats"}
    logits = clf.logits(a, _images(2, 32, seed=0))
    assert logits.shape == (2, 3) and np.all(np.isfinite(logits))
