"""`texter convert` on checkpoints whose settings the weights do not reveal, damaged ones
and whole pickled models: each converts from the command line and matches upstream to
1e-4, or gets one clear error and no traceback."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
torchvision = pytest.importorskip("torchvision")

from tests.parity.test_clip_parity import (  # noqa: E402
    _hf_config,
    _hf_image_features,
    _hf_text_features,
    _hf_to_openai_state_dict,
    _images,
    _max_diff,
    _save_hf,
    _token_rows,
)
from tests.parity.test_vit_parity import (  # noqa: E402
    SMALL_TV,
    _dino_features,
    _DinoViT,
    _perturb,
    _torch_input,
    _tv_reference,
)
from texter_jax.cli.main import main  # noqa: E402
from texter_jax.io.checkpoints import load_model  # noqa: E402

ATOL = 1e-4


def _convert(capsys, *args) -> tuple[int, str]:
    code = main(["convert", *map(str, args)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _parity(model, variables, images, ref_feats, ref_logits) -> float:
    feats = np.asarray(model.features(variables, images))
    logits = np.asarray(model.logits(variables, images))
    return max(_max_diff(feats, ref_feats.detach().numpy()),
               _max_diff(logits, ref_logits.detach().numpy()))


def test_vit_of_unpublished_width_needs_and_takes_num_heads(tmp_path, capsys):
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    tv = _perturb(VisionTransformer(**SMALL_TV), seed=1)  # width 64: no published size
    torch.save(tv.state_dict(), tmp_path / "vit.pth")
    code, err = _convert(capsys, tmp_path / "vit.pth", tmp_path / "a")
    assert code == 2 and "--num-heads" in err and not (tmp_path / "a").exists()
    code, err = _convert(capsys, tmp_path / "vit.pth", tmp_path / "b", "--num-heads", "3")
    assert code == 2 and "does not divide" in err
    assert _convert(capsys, tmp_path / "vit.pth", tmp_path / "c", "--num-heads", "4")[0] == 0
    model, variables = load_model(tmp_path / "c")
    images = _images(2, 32, seed=3)
    reference = _tv_reference(tv, _torch_input(model, images))
    assert _parity(model, variables, images, *reference) <= ATOL


def test_dino_vit_two_files_take_num_heads(tmp_path, capsys):
    torch.manual_seed(0)
    backbone = _perturb(_DinoViT(image=32, patch=8, dim=48, depth=4, heads=4), seed=2)
    head = _perturb(torch.nn.Linear(48 * 4, 5), seed=3)
    torch.save(backbone.state_dict(), tmp_path / "backbone.pth")
    torch.save({"state_dict": {f"module.linear.{k}": v for k, v in head.state_dict().items()}},
               tmp_path / "linear.pth")
    base = (tmp_path / "backbone.pth",)
    code, err = _convert(capsys, *base, tmp_path / "a", "--head", tmp_path / "linear.pth")
    assert code == 2 and "--num-heads" in err
    assert _convert(capsys, *base, tmp_path / "b", "--head", tmp_path / "linear.pth",
                    "--num-heads", "4")[0] == 0
    model, variables = load_model(tmp_path / "b")
    images = _images(2, 32, seed=4)
    with torch.no_grad():
        feats = _dino_features(backbone, _torch_input(model, images), 4, False)
        assert _parity(model, variables, images, feats, head(feats)) <= ATOL


def test_openai_clip_off_the_64_rule(tmp_path, capsys):
    # image width 96 (64 does not divide it: the rule would silently give 1 head),
    # text width 32 (the rule gave 0 heads: a ZeroDivisionError before)
    cfg = _hf_config(vision_width=96, vision_heads=3, text_width=32, text_heads=4)
    model = _save_hf(cfg, tmp_path / "hf")
    torch.save(_hf_to_openai_state_dict(model, cfg), tmp_path / "openai.pt")
    code, err = _convert(capsys, tmp_path / "openai.pt", tmp_path / "a")
    assert code == 2 and "--num-heads" in err and "multiple of 64" in err
    code, err = _convert(capsys, tmp_path / "openai.pt", tmp_path / "a", "--num-heads", "3")
    assert code == 2 and "--text-heads" in err
    assert _convert(capsys, tmp_path / "openai.pt", tmp_path / "b", "--num-heads", "3",
                    "--text-heads", "4")[0] == 0
    ours, variables = load_model(tmp_path / "b")
    images, ids = _images(2, 32, seed=5), _token_rows(3, 16, 320, eos=319, low=3, high=318)
    err_img = _max_diff(ours.encode_image(variables, images), _hf_image_features(model, images))
    err_txt = _max_diff(ours.encode_text(variables, ids), _hf_text_features(model, ids))
    assert max(err_img, err_txt) <= ATOL


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=6).eval()
    return model, tmp_path_factory.mktemp("r18")


def _resnet_parity(tmodel, folder) -> float:
    model, variables = load_model(folder)
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = tmodel((torch.from_numpy(x).permute(0, 3, 1, 2) - mean) / std).numpy()
    return _max_diff(model.logits(variables, x), ref)


@pytest.mark.parametrize("key", ["conv1.weight", "layer2.1.bn2.running_var"])
def test_a_missing_key_is_named_without_layout(resnet18, capsys, key):
    """Whether or not the key is one the layout is recognised by, the report names the
    layout it looks like and the key; before, a missing conv1.weight gave "cannot
    recognise the architecture"."""
    tmodel, tmp = resnet18
    sd = tmodel.state_dict()
    del sd[key]
    torch.save(sd, tmp / "damaged.pth")
    code, err = _convert(capsys, tmp / "damaged.pth", tmp / "out_damaged")
    assert code == 2 and key in err and "cannot recognise" not in err
    if key == "conv1.weight":
        assert "looks like layout torchvision-resnet" in err


def test_nonfinite_weights_are_refused_unless_allowed(resnet18, capsys):
    tmodel, tmp = resnet18
    sd = {k: v.clone() for k, v in tmodel.state_dict().items()}
    sd["fc.weight"][0, :3] = float("nan")
    sd["layer1.0.conv1.weight"][0, 0, 0, 0] = float("inf")
    torch.save(sd, tmp / "nan.pth")
    code, err = _convert(capsys, tmp / "nan.pth", tmp / "out_nan")
    assert code == 2 and "fc.weight (3 values)" in err and "layer1.0.conv1.weight (1 values)" in err
    assert "--allow-nonfinite" in err and not (tmp / "out_nan").exists()
    code, err = _convert(capsys, tmp / "nan.pth", tmp / "out_nan", "--allow-nonfinite")
    assert code == 0 and "warning" in err
    _, variables = load_model(tmp / "out_nan")
    assert np.isnan(variables["params"]["fc"]["kernel"]).sum() == 3


def test_whole_pickled_model_needs_allow_pickle(resnet18, capsys):
    tmodel, tmp = resnet18
    torch.save(tmodel, tmp / "whole.pth")  # the whole nn.Module, pickled
    code, err = _convert(capsys, tmp / "whole.pth", tmp / "out_whole")
    assert code == 2 and "--allow-pickle" in err and len(err.strip().splitlines()) == 1
    code, err = _convert(capsys, tmp / "whole.pth", tmp / "out_whole", "--allow-pickle")
    assert code == 0 and "runs code from that file" in err
    assert _resnet_parity(tmodel, tmp / "out_whole") <= ATOL


def test_a_setting_the_layout_does_not_take_is_refused(resnet18, capsys):
    tmodel, tmp = resnet18
    torch.save(tmodel.state_dict(), tmp / "plain.pth")
    code, err = _convert(capsys, tmp / "plain.pth", tmp / "out_plain", "--num-heads", "4")
    assert code == 2 and "takes no --num-heads" in err
