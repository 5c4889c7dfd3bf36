"""Parity of the Flax ViT / DINO ViT against torchvision, transformers and DINO.

Every torch model is randomly initialised, its parameters perturbed (so LayerNorm
scales/biases and zero-initialised heads carry information and a swapped key shows
up), saved in its real on-disk format under ``tmp_path``, read back by
``texter_jax.converters.state_dict.read_source`` and converted. Features and logits must agree
to 1e-4 max abs at fp32 (DEVELOPING "Numbers"; conftest sets highest matmul precision).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tnn = torch.nn

from texter_jax.converters.mapping import ConversionError  # noqa: E402
from texter_jax.converters.state_dict import Source, read_source  # noqa: E402
from texter_jax.converters.vit import (  # noqa: E402
    convert_dino_vit,
    convert_hf_vit,
    convert_torchvision_vit,
    detect_layout,
)
from texter_jax.io.checkpoints import load_model, save_model  # noqa: E402
from texter_jax.models.dino import DinoViTConfig  # noqa: E402
from texter_jax.models.registry import abstract_variables, build_model, config_to_dict  # noqa: E402

TOL = 1e-4
SMALL_TV = dict(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64,
                mlp_dim=128, num_classes=10)


# ------------------------------------------------------------------------ helpers

def _perturb(model: tnn.Module, seed: int) -> tnn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype(np.float32)


def _torch_input(model, images: np.ndarray):
    """What the torch model sees: the Classifier's normalisation, NCHW."""
    x = (images - np.asarray(model.mean, np.float32)) / np.asarray(model.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _run(model, variables, images):
    f = jax.jit(lambda v, x: (model.features(v, x), model.logits(v, x)))
    return tuple(np.asarray(a) for a in f(variables, jnp.asarray(images)))


def _check(model, variables, images, ref_feats, ref_logits) -> tuple[float, float]:
    feats, logits = _run(model, variables, images)
    ref_feats, ref_logits = ref_feats.detach().numpy(), ref_logits.detach().numpy()
    assert feats.shape == ref_feats.shape and logits.shape == ref_logits.shape
    ef, el = float(np.abs(feats - ref_feats).max()), float(np.abs(logits - ref_logits).max())
    print(f"max abs err: features {ef:.2e}, logits {el:.2e}")
    assert ef <= TOL and el <= TOL, (ef, el)
    return ef, el


def _tv_reference(tv, x):
    """torchvision ViT split: class token after encoder.ln, then heads."""
    with torch.no_grad():
        tokens = tv._process_input(x)
        tokens = torch.cat([tv.class_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        feats = tv.encoder(tokens)[:, 0]
        return feats, tv.heads(feats)


@pytest.fixture(scope="module")
def small_tv():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return _perturb(VisionTransformer(**SMALL_TV), seed=1)


# -------------------------------------------------------------------- torchvision

def test_torchvision_small_parity_and_roundtrip(small_tv, tmp_path):
    path = tmp_path / "vit_small.pth"
    torch.save(small_tv.state_dict(), path)
    src = read_source(path)
    assert detect_layout(src.state_dict) == "torchvision-vit"
    conv = convert_torchvision_vit(src, num_classes=10, num_heads=4)
    assert conv.family == "vit" and conv.layout == "torchvision-vit"
    assert conv.config["image_size"] == 32 and conv.config["depth"] == 2
    model = build_model(conv.family, conv.config)
    images = _images(2, 32)
    _check(model, conv.variables, images, *_tv_reference(small_tv, _torch_input(model, images)))

    out = save_model(tmp_path / "converted", conv.family, conv.config, conv.variables,
                     source={"path": str(path), "layout": conv.layout})
    model2, variables2 = load_model(out)
    assert model2.config == model.config
    a, b = _run(model, conv.variables, images), _run(model2, variables2, images)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_torchvision_vit_b_16_parity(tmp_path):
    from torchvision.models import vit_b_16

    torch.manual_seed(0)
    tv = _perturb(vit_b_16(weights=None), seed=2)
    path = tmp_path / "vit_b_16.pth"
    torch.save(tv.state_dict(), path)
    conv = convert_torchvision_vit(read_source(path))  # 768 wide -> 12 heads
    assert conv.config["num_heads"] == 12 and conv.config["num_classes"] == 1000
    model = build_model(conv.family, conv.config)
    assert model.feature_dim == 768
    images = _images(1, 224, seed=3)
    _check(model, conv.variables, images, *_tv_reference(tv, _torch_input(model, images)))


# ----------------------------------------------------------------------------- HF

def _tiny_hf():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=128, num_labels=10)
    return _perturb(ViTForImageClassification(cfg), seed=4)


def test_hf_vit_parity_both_namings(tmp_path):
    hf = _tiny_hf()
    hf.save_pretrained(tmp_path / "hf")  # on-disk (old) names
    torch.save(hf.state_dict(), tmp_path / "hf_state.pth")  # in-memory (new) names
    from_folder = read_source(tmp_path / "hf")
    from_state = read_source(tmp_path / "hf_state.pth")
    assert any(".attention.attention.query." in k for k in from_folder.state_dict)
    assert any(".attention.q_proj." in k for k in from_state.state_dict)
    assert detect_layout(from_folder.state_dict) == detect_layout(from_state.state_dict) == "hf-vit"

    images = _images(2, 32, seed=5)
    convs = [convert_hf_vit(from_folder), convert_hf_vit(from_state, num_heads=4)]
    assert convs[0].config == convs[1].config
    assert convs[0].config["layer_norm_eps"] == 1e-12
    model = build_model("vit", convs[0].config)
    with torch.no_grad():
        x = _torch_input(model, images)
        ref_feats = hf.vit(x).last_hidden_state[:, 0]
        ref_logits = hf(pixel_values=x).logits
    for conv in convs:
        _check(model, conv.variables, images, ref_feats, ref_logits)


def test_hf_config_whitelist(tmp_path):
    hf = _tiny_hf()
    sd = {k: v.numpy() for k, v in hf.state_dict().items()}
    good = hf.config.to_dict()
    for bad, needle in (({"hidden_act": "gelu_new"}, "hidden_act"),
                        ({"some_new_option": 3}, "some_new_option")):
        with pytest.raises(ConversionError, match=needle):
            convert_hf_vit(Source(sd, "mem", {**good, **bad}), num_heads=4)
    # A pooler checkpoint is accepted: ViTForImageClassification has no pooler.
    sd_pool = {**sd, "vit.pooler.dense.weight": np.zeros((64, 64), np.float32)}
    convert_hf_vit(Source(sd_pool, "mem", good))


# --------------------------------------------------------------------------- DINO
# Minimal torch re-implementation of facebookresearch/dino's vision_transformer.py
# (same module and parameter names) and of eval_linear's feature recipe, written
# here because DINO's code cannot be downloaded. Test-only.

class _DinoAttention(tnn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = tnn.Linear(dim, 3 * dim, bias=True)
        self.proj = tnn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _DinoMlp(tnn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = tnn.Linear(dim, hidden), tnn.GELU(), tnn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _DinoBlock(tnn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = tnn.LayerNorm(dim, eps=1e-6)
        self.attn = _DinoAttention(dim, heads)
        self.norm2 = tnn.LayerNorm(dim, eps=1e-6)
        self.mlp = _DinoMlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(tnn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = tnn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class _DinoViT(tnn.Module):
    def __init__(self, image, patch, dim, depth, heads):
        super().__init__()
        self.patch_embed = _PatchEmbed(patch, dim)
        self.cls_token = tnn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = tnn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = tnn.ModuleList([_DinoBlock(dim, heads) for _ in range(depth)])
        self.norm = tnn.LayerNorm(dim, eps=1e-6)

    def get_intermediate_layers(self, x, n):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        out = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if len(self.blocks) - i <= n:
                out.append(self.norm(x))
        return out


def _dino_features(backbone, x, n, avgpool):
    """DINO eval_linear's ViT recipe."""
    inter = backbone.get_intermediate_layers(x, n)
    out = torch.cat([t[:, 0] for t in inter], dim=-1)
    if avgpool:
        out = torch.cat((out.unsqueeze(-1), inter[-1][:, 1:].mean(dim=1).unsqueeze(-1)), dim=-1)
        out = out.reshape(out.shape[0], -1)
    return out


@pytest.mark.parametrize("n_last, avgpool", [(4, False), (1, True)])
def test_dino_vit_parity(tmp_path, n_last, avgpool):
    torch.manual_seed(0)
    dim = 192  # DINO ViT-T width: 3 heads inferred from the published sizes
    backbone = _perturb(_DinoViT(image=32, patch=8, dim=dim, depth=5, heads=3), seed=6)
    head = _perturb(tnn.Linear(dim * (n_last + int(avgpool)), 7), seed=7)
    torch.save(backbone.state_dict(), tmp_path / "backbone.pth")
    # eval_linear's checkpoint: DDP-wrapped LinearClassifier inside "state_dict".
    torch.save({"epoch": 100, "best_acc": 0.5, "state_dict": {
        f"module.linear.{k}": v for k, v in head.state_dict().items()}},
        tmp_path / "linear.pth")
    bsrc, hsrc = read_source(tmp_path / "backbone.pth"), read_source(tmp_path / "linear.pth")
    assert detect_layout(bsrc.state_dict) == "dino-vit"
    conv = convert_dino_vit(bsrc, hsrc)
    assert conv.family == "dino_vit" and conv.config["num_heads"] == 3
    assert (conv.config["n_last_blocks"], conv.config["avgpool_patchtokens"]) == (n_last, avgpool)
    model = build_model(conv.family, conv.config)
    images = _images(2, 32, seed=8)
    with torch.no_grad():
        feats = _dino_features(backbone, _torch_input(model, images), n_last, avgpool)
        _check(model, conv.variables, images, feats, head(feats))

    out = save_model(tmp_path / "dino_converted", conv.family, conv.config, conv.variables)
    model2, variables2 = load_model(out)
    assert model2.config == model.config
    jax.tree.map(np.testing.assert_array_equal, conv.variables, variables2)


def test_dino_vit_s8_dims():
    model = build_model("dino_vit", config_to_dict(DinoViTConfig()))  # ViT-S/8 at 224
    assert model.feature_dim == 1536 and model.num_classes == 1000
    abstract = abstract_variables(model)
    assert abstract["params"]["pos_embed"].shape == (1, 785, 384)
    out = jax.eval_shape(model.features, abstract, jnp.zeros((1, 224, 224, 3)))
    assert out.shape == (1, 1536)


# ------------------------------------------------------------------------- errors

def test_conversion_errors_name_keys(small_tv):
    sd = {k: v.numpy().copy() for k, v in small_tv.state_dict().items()}
    drop = "encoder.layers.encoder_layer_1.ln_2.bias"
    extra = "encoder.layers.encoder_layer_0.extra.weight"
    resized = "encoder.layers.encoder_layer_0.mlp.3.bias"
    for bad, needle in (({k: v for k, v in sd.items() if k != drop}, drop),
                        ({**sd, extra: np.zeros(3, np.float32)}, extra),
                        ({**sd, resized: np.zeros(65, np.float32)}, resized)):
        with pytest.raises(ConversionError, match=needle.replace(".", r"\.")):
            convert_torchvision_vit(Source(bad, "mem"), num_heads=4)
    with pytest.raises(ConversionError, match="num_heads"):
        convert_torchvision_vit(Source(sd, "mem"))  # width 64: heads unknown
    with pytest.raises(ConversionError, match="11"):
        convert_torchvision_vit(Source(sd, "mem"), num_heads=4, num_classes=11)
    pre = {**sd, "heads.pre_logits.weight": np.zeros((64, 64), np.float32)}
    with pytest.raises(ConversionError, match="representation_size"):
        convert_torchvision_vit(Source(pre, "mem"), num_heads=4)


def test_detect_layout_other_keys():
    assert detect_layout(["conv1.weight", "fc.weight"]) is None
    assert detect_layout(["module.backbone.cls_token", "module.backbone.pos_embed",
                          "module.backbone.patch_embed.proj.weight"]) == "dino-vit"


def test_wrong_image_size_is_refused(small_tv):
    sd = {k: v.numpy() for k, v in small_tv.state_dict().items()}
    conv = convert_torchvision_vit(Source(sd, "mem"), num_heads=4)
    model = build_model(conv.family, conv.config)
    with pytest.raises(ValueError, match="interpolation"):
        model.features(conv.variables, jnp.zeros((1, 48, 48, 3)))
