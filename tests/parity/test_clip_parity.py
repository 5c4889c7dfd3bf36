"""CLIP parity: our Flax CLIP vs transformers' CLIPModel (random init, real on-disk formats).

Tolerance 1e-4 max abs (DEVELOPING "Numbers"): both sides run fp32 at the highest
matmul precision, so the only differences are summation orders (~1e-6 here).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from texter_jax.converters import clip as clip_conv  # noqa: E402
from texter_jax.converters.mapping import ConversionError  # noqa: E402
from texter_jax.converters.state_dict import Source, read_source  # noqa: E402
from texter_jax.io.checkpoints import load_model, save_model  # noqa: E402
from texter_jax.models import clip as clip_model  # noqa: E402
from texter_jax.models.registry import build_model  # noqa: E402

ATOL = 1e-4


# --- helpers ---------------------------------------------------------------------------

def _hf_config(*, vision_width=32, vision_heads=4, text_width=32, text_heads=4,
               vocab=320, context=16, eos_token_id=2, **top):
    return transformers.CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=text_width,
                         intermediate_size=2 * text_width, num_hidden_layers=2,
                         num_attention_heads=text_heads, max_position_embeddings=context,
                         eos_token_id=eos_token_id, bos_token_id=vocab - 2,
                         pad_token_id=vocab - 1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=vision_width,
                           intermediate_size=2 * vision_width, num_hidden_layers=2,
                           num_attention_heads=vision_heads),
        projection_dim=24, **top)


def _save_hf(config, folder: Path):
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():  # init sets logit_scale to a constant; make it a real check
        model.logit_scale.fill_(3.1)
    model.save_pretrained(folder)
    return model


def _images(batch: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (batch, size, size, 3)).astype(np.float32)


def _hf_image_features(model, images: np.ndarray) -> np.ndarray:
    x = (images - np.asarray(clip_model.CLIP_MEAN, np.float32)) / np.asarray(
        clip_model.CLIP_STD, np.float32)
    with torch.no_grad():
        out = model.get_image_features(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2)))
    return out.pooler_output.numpy()


def _hf_text_features(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model.get_text_features(input_ids=torch.from_numpy(ids.astype(np.int64)))
    return out.pooler_output.numpy()


def _token_rows(batch: int, length: int, vocab: int, *, eos: int, low: int, high: int,
                seed: int = 0) -> np.ndarray:
    """[B, L] rows ``bos, t..., eos, eos...`` (pad = eos as in HF CLIP), varied lengths."""
    rng = np.random.default_rng(seed)
    ids = np.full((batch, length), eos, np.int32)
    for b in range(batch):
        n = int(rng.integers(1, length - 1))
        ids[b, 0] = vocab - 2
        ids[b, 1:1 + n] = rng.integers(low, high, n)
    return ids


def _jit_image(ours, variables, images):
    return jax.jit(ours.encode_image)(variables, images)


def _jit_text(ours, variables, ids):
    return jax.jit(ours.encode_text)(variables, ids)


def _max_diff(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)))


def _convert_folder(folder: Path):
    source = read_source(folder)
    assert clip_conv.detect_layout(source.state_dict) == "hf-clip"
    conv = clip_conv.convert_hf_clip(source)
    return conv, build_model(conv.family, conv.config)


# --- tiny HF CLIPModel -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_clip")
    model = _save_hf(_hf_config(), folder)
    conv, ours = _convert_folder(folder)
    return model, folder, conv, ours


def test_tiny_hf_parity(tiny):
    model, _, conv, ours = tiny
    assert conv.config["text_pooling"] == "argmax"  # eos_token_id == 2: HF's legacy path
    images = _images(3, 32)
    got = _jit_image(ours, conv.variables, images)
    err_img = _max_diff(got, _hf_image_features(model, images))
    # Full context rows and shorter rows (positions are sliced to L).
    ids = _token_rows(4, 16, 320, eos=319, low=3, high=318)
    err_txt = _max_diff(_jit_text(ours, conv.variables, ids), _hf_text_features(model, ids))
    short = ids[:, :9].copy()
    short[:, -1] = 319
    err_short = _max_diff(_jit_text(ours, conv.variables, short),
                          _hf_text_features(model, short))
    print(f"tiny hf: image {err_img:.2e} text {err_txt:.2e} short text {err_short:.2e}")
    assert max(err_img, err_txt, err_short) <= ATOL
    np.testing.assert_allclose(ours.logit_scale(conv.variables), np.exp(3.1), rtol=1e-6)


def test_tiny_hf_eos_pooling(tiny):
    """A non-legacy eos_token_id pools at its first occurrence, not at the largest id."""
    model, folder, _, _ = tiny
    source = read_source(folder)
    source.hf_config["text_config"]["eos_token_id"] = 5
    conv = clip_conv.convert_hf_clip(source)
    assert (conv.config["text_pooling"], conv.config["eos_token_id"]) == ("eos", 5)
    ours = build_model(conv.family, conv.config)
    ids = _token_rows(3, 16, 320, eos=5, low=10, high=318, seed=1)  # argmax would differ
    model.text_model.eos_token_id = 5
    try:
        ref = _hf_text_features(model, ids)
    finally:
        model.text_model.eos_token_id = 2
    err = _max_diff(_jit_text(ours, conv.variables, ids), ref)
    print(f"tiny hf eos pooling: text {err:.2e}")
    assert err <= ATOL


def test_save_load_round_trip(tiny, tmp_path):
    _, folder, conv, ours = tiny
    out = save_model(tmp_path / "clip", conv.family, conv.config, conv.variables,
                     source={"path": str(folder), "layout": conv.layout})
    model, variables = load_model(out)
    assert isinstance(model, clip_model.Clip) and model.config == ours.config
    def flat(tree):
        return dict(jax.tree_util.tree_leaves_with_path(tree))
    a, b = flat(variables), flat(conv.variables)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    # The un-jitted public path on both sides: identical computations, identical bits.
    images, ids = _images(2, 32, seed=3), _token_rows(2, 16, 320, eos=319, low=3, high=318)
    np.testing.assert_array_equal(model.encode_image(variables, images),
                                  ours.encode_image(conv.variables, images))
    np.testing.assert_array_equal(model.encode_text(variables, ids),
                                  ours.encode_text(conv.variables, ids))


def test_hf_config_whitelist(tiny):
    _, folder, _, _ = tiny
    source = read_source(folder)
    source.hf_config["vision_config"]["use_rotary"] = True
    with pytest.raises(ConversionError, match="use_rotary"):
        clip_conv.convert_hf_clip(source)
    source = read_source(folder)
    source.hf_config["text_config"]["hidden_act"] = "relu"
    with pytest.raises(ConversionError, match="different activations"):
        clip_conv.convert_hf_clip(source)
    source = read_source(folder)
    with pytest.raises(ConversionError, match="config.json"):
        clip_conv.convert_hf_clip(Source(source.state_dict, "weights.safetensors", None))
    # An in-memory CLIPConfig.to_dict() carries more generic attributes than config.json.
    cfg = clip_conv.hf_clip_config(transformers.CLIPConfig(vision_config=dict(patch_size=16))
                                   .to_dict())
    assert cfg == clip_model.ClipConfig(text_pooling="eos")  # default eos_token_id 49407


# --- OpenAI layout ---------------------------------------------------------------------------

def _openai_block(sd, hf_prefix: str, oa_prefix: str) -> dict:
    a = f"{hf_prefix}.self_attn"
    out = {
        f"{oa_prefix}.attn.in_proj_weight": torch.cat(
            [sd[f"{a}.{p}_proj.weight"] for p in "qkv"]),
        f"{oa_prefix}.attn.in_proj_bias": torch.cat([sd[f"{a}.{p}_proj.bias"] for p in "qkv"]),
    }
    for hf, oa in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                   ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
        for p in ("weight", "bias"):
            out[f"{oa_prefix}.{oa}.{p}"] = sd[f"{hf_prefix}.{hf}.{p}"]
    return out


def _hf_to_openai_state_dict(model, cfg) -> dict:
    """Test-only converter in the other direction: HF CLIPModel -> OpenAI clip keys."""
    sd = model.state_dict()
    v, t = "vision_model", "text_model"
    out = {
        "visual.conv1.weight": sd[f"{v}.embeddings.patch_embedding.weight"],
        "visual.class_embedding": sd[f"{v}.embeddings.class_embedding"],
        "visual.positional_embedding": sd[f"{v}.embeddings.position_embedding.weight"],
        "visual.proj": sd["visual_projection.weight"].T.contiguous(),
        "token_embedding.weight": sd[f"{t}.embeddings.token_embedding.weight"],
        "positional_embedding": sd[f"{t}.embeddings.position_embedding.weight"],
        "text_projection": sd["text_projection.weight"].T.contiguous(),
        "logit_scale": sd["logit_scale"],
        # Scalars OpenAI's TorchScript state dicts carry.
        "input_resolution": torch.tensor(32), "context_length": torch.tensor(16),
        "vocab_size": torch.tensor(320),
    }
    for hf, oa in ((f"{v}.pre_layrnorm", "visual.ln_pre"),
                   (f"{v}.post_layernorm", "visual.ln_post"),
                   (f"{t}.final_layer_norm", "ln_final")):
        out[f"{oa}.weight"], out[f"{oa}.bias"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]
    for i in range(cfg.vision_config.num_hidden_layers):
        out.update(_openai_block(sd, f"{v}.encoder.layers.{i}",
                                 f"visual.transformer.resblocks.{i}"))
    for i in range(cfg.text_config.num_hidden_layers):
        out.update(_openai_block(sd, f"{t}.encoder.layers.{i}", f"transformer.resblocks.{i}"))
    return {k: x.clone() for k, x in out.items()}


def test_openai_layout(tmp_path):
    # OpenAI files carry no head counts (build_model assumes 64-wide heads): use 2 of them.
    cfg = _hf_config(vision_width=128, vision_heads=2, text_width=128, text_heads=2)
    model = _save_hf(cfg, tmp_path / "hf")
    conv_hf, _ = _convert_folder(tmp_path / "hf")
    torch.save(_hf_to_openai_state_dict(model, cfg), tmp_path / "openai.pt")
    source = read_source(tmp_path / "openai.pt")
    assert clip_conv.detect_layout(source.state_dict) == "openai-clip"
    conv = clip_conv.convert_openai_clip(source)
    assert conv.layout == "openai-clip" and conv.config == conv_hf.config
    def flat(tree):
        return dict(jax.tree_util.tree_leaves_with_path(tree))
    a, b = flat(conv.variables), flat(conv_hf.variables)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ours = build_model(conv.family, conv.config)
    images, ids = _images(2, 32, seed=4), _token_rows(3, 16, 320, eos=319, low=3, high=318)
    err_img = _max_diff(_jit_image(ours, conv.variables, images), _hf_image_features(model, images))
    err_txt = _max_diff(_jit_text(ours, conv.variables, ids), _hf_text_features(model, ids))
    print(f"openai layout: image {err_img:.2e} text {err_txt:.2e}")
    assert max(err_img, err_txt) <= ATOL


def test_openai_resnet_refused():
    sd = {"visual.conv1.weight": np.zeros((32, 3, 3, 3), np.float32),
          "visual.layer1.0.conv1.weight": np.zeros((8, 8, 1, 1), np.float32),
          "visual.attnpool.c_proj.weight": np.zeros((8, 8), np.float32),
          "token_embedding.weight": np.zeros((10, 8), np.float32),
          "ln_final.weight": np.zeros((8,), np.float32)}
    assert clip_conv.detect_layout(sd) == "openai-clip"
    with pytest.raises(ConversionError, match="ResNet image tower.*ViT-B/16"):
        clip_conv.convert_openai_clip(Source(sd, "rn50.pt"))
    assert clip_conv.detect_layout({"conv1.weight": None}) is None


# --- real size: ViT-B/16 ---------------------------------------------------------------------

def _fill_random(model, seed: int) -> None:
    """Fast random weights (HF's own init of 150M parameters is several times slower):
    std 0.02 everywhere, LayerNorm scales near 1, CLIP's initial log logit scale."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 0:
                p.fill_(2.6592)
            elif "norm" in name and name.endswith(".weight"):
                p.normal_(1.0, 0.05, generator=g)
            else:
                p.normal_(0.0, 0.02, generator=g)


@pytest.mark.slow
def test_vit_b16_real_size(tmp_path):
    """openai/clip-vit-base-patch16 shapes (random weights), batch 2: ~20 s, ~2.5 GiB peak."""
    from transformers.initialization import no_init_weights

    cfg = transformers.CLIPConfig(
        text_config=dict(eos_token_id=2),  # the published config's legacy value
        vision_config=dict(patch_size=16), projection_dim=512)
    with no_init_weights():
        model = transformers.CLIPModel(cfg).eval()
    _fill_random(model, seed=0)
    model.save_pretrained(tmp_path)
    images = _images(2, 224, seed=5)
    ids = _token_rows(2, 77, 49408, eos=49407, low=3, high=49406, seed=5)
    ref_img, ref_txt = _hf_image_features(model, images), _hf_text_features(model, ids)
    del model  # keep one copy of the weights alive at a time
    conv, ours = _convert_folder(tmp_path)
    assert (ours.image_size, ours.embed_dim, ours.context_length) == (224, 512, 77)
    assert ours.config == clip_model.ClipConfig()  # = our ViT-B/16 defaults
    err_img = _max_diff(_jit_image(ours, conv.variables, images), ref_img)
    err_txt = _max_diff(_jit_text(ours, conv.variables, ids), ref_txt)
    print(f"ViT-B/16: image {err_img:.2e} text {err_txt:.2e}")
    assert max(err_img, err_txt) <= ATOL


# --- preprocessing ---------------------------------------------------------------------------

def test_preprocess_images_against_pil():
    from PIL import Image

    rng = np.random.default_rng(6)
    # A smooth image (bicubic of noise is dominated by uint8 rounding and clipping).
    yy, xx = np.mgrid[0:48, 0:80] / 40.0
    img = np.stack([0.5 + 0.4 * np.sin(3 * xx + c + yy) for c in range(3)], -1)
    img = np.clip(img + rng.normal(0, 0.01, img.shape), 0, 1).astype(np.float32)
    got = np.asarray(clip_model.preprocess_images(img[None], 32))[0]
    assert got.shape == (32, 32, 3)
    pil = Image.fromarray(np.round(img * 255).astype(np.uint8)).resize((53, 32), Image.BICUBIC)
    left = int(round((53 - 32) / 2.0))
    ref = np.asarray(pil, np.float32)[:, left:left + 32] / 255.0
    err = np.abs(got - ref)
    print(f"preprocess vs PIL: max {err.max():.3f}, mean {err.mean():.4f}")
    # Measured: max ~1 grey level (PIL rounds to uint8, we stay in float).
    assert err.mean() < 1 / 255 and err.max() < 3 / 255
