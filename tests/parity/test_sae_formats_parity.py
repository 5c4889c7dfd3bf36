"""SAEs read from and written for SAELens and dictionary_learning give the same codes and
reconstructions as those packages (random weights with a decoder bias and decoder rows off
unit norm, so every folded term matters; fp32, atol 1e-5)."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from texter_jax import sae as sae_lib  # noqa: E402
from texter_jax.converters.sae_formats import (  # noqa: E402
    load_dictionary_learning,
    load_saelens,
    save_dictionary_learning,
    save_saelens,
)
from texter_jax.sae import SaeConfig, init_sae, sae_apply  # noqa: E402

D, N, K = 16, 64, 6
ATOL = 1e-5  # float32 products of 16-64 terms


def _x(seed=0):
    return np.random.default_rng(seed).normal(size=(12, D)).astype(np.float32)


def _ours(threshold=None):
    rng = np.random.default_rng(3)
    p = jax.tree.map(np.asarray, init_sae(jax.random.key(0), SaeConfig(D, N, K)))
    p["dictionary"]["bias"] = rng.normal(size=D).astype(np.float32)
    p["dictionary"]["scale"] = rng.uniform(0.5, 2.0, N).astype(np.float32)
    if threshold is not None:
        p["threshold"] = np.float32(threshold)
    return SaeConfig(D, N, K), p


def _check(params, k, codes, x_hat, x):
    _, got_codes, got_hat = sae_apply(params, x, k)
    np.testing.assert_allclose(got_codes, codes, atol=ATOL)
    np.testing.assert_allclose(got_hat, x_hat, atol=ATOL)
    assert (np.asarray(got_codes) > 0).sum() > 0


def _perturbed(module, names):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in names:
            t = dict(module.named_parameters())[name]
            t.copy_(torch.randn(t.shape, generator=g) * (0.3 if t.ndim == 1 else 1.0))


def test_saelens_topk_both_ways(tmp_path):
    sl = pytest.importorskip("sae_lens")
    from sae_lens.saes import TopKSAE, TopKSAEConfig

    sae = TopKSAE(TopKSAEConfig(d_in=D, d_sae=N, k=K, apply_b_dec_to_input=True,
                                dtype="float32", device="cpu"))
    _perturbed(sae, ["W_enc", "b_enc", "W_dec", "b_dec"])
    sae.save_model(tmp_path / "theirs")
    cfg, params = load_saelens(tmp_path / "theirs")
    x = _x()
    with torch.no_grad():
        f = sae.encode(torch.from_numpy(x))
        _check(params, cfg.top_k, f.numpy(), sae.decode(f).numpy(), x)
    # ours -> SAELens, read back by SAELens itself; and kept through our own folder format
    cfg, ours = _ours()
    save_saelens(tmp_path / "mine", cfg, ours)
    back = sl.SAE.load_from_disk(tmp_path / "mine")
    with torch.no_grad():
        f = back.encode(torch.from_numpy(x))
        _check(ours, K, f.numpy(), back.decode(f).numpy(), x)
    sae_lib.save(tmp_path / "folder", cfg, ours)
    _, again = sae_lib.load(tmp_path / "folder")
    np.testing.assert_array_equal(again["dictionary"]["scale"], ours["dictionary"]["scale"])


def test_saelens_jumprelu_holds_a_batchtopk_threshold(tmp_path):
    sl = pytest.importorskip("sae_lens")
    cfg, ours = _ours(threshold=0.4)
    save_saelens(tmp_path / "mine", cfg, ours)
    back = sl.SAE.load_from_disk(tmp_path / "mine")
    assert type(back).__name__ == "JumpReLUSAE"
    x = _x(1)
    with torch.no_grad():
        f = back.encode(torch.from_numpy(x))
        _check(ours, K, f.numpy(), back.decode(f).numpy(), x)
    cfg2, read = load_saelens(tmp_path / "mine")
    _check(read, cfg2.top_k, *(np.asarray(a) for a in sae_apply(ours, x, K)[1:]), x)


@pytest.mark.parametrize("threshold", [None, 0.3])
def test_dictionary_learning_topk_both_ways(tmp_path, threshold):
    pytest.importorskip("dictionary_learning")
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    ae = AutoEncoderTopK(D, N, K)
    _perturbed(ae, ["encoder.weight", "encoder.bias", "decoder.weight", "b_dec"])
    if threshold is not None:
        ae.threshold.fill_(threshold)
    torch.save(ae.state_dict(), tmp_path / "ae.pt")
    cfg, params = load_dictionary_learning(tmp_path / "ae.pt")
    x = _x(2)
    use = threshold is not None
    with torch.no_grad():
        f = ae.encode(torch.from_numpy(x), use_threshold=use)
        _check(params, cfg.top_k, f.numpy(), ae.decode(f).numpy(), x)
    cfg, ours = _ours(threshold)
    save_dictionary_learning(tmp_path / "mine.pt", cfg, ours)
    back = AutoEncoderTopK.from_pretrained(str(tmp_path / "mine.pt"))
    with torch.no_grad():
        f = back.encode(torch.from_numpy(x), use_threshold=use)
        _check(ours, K, f.numpy(), back.decode(f).numpy(), x)


def test_saelens_options_that_change_the_input_are_refused(tmp_path):
    import json

    cfg, ours = _ours()
    save_saelens(tmp_path / "m", cfg, ours)
    c = json.loads((tmp_path / "m" / "cfg.json").read_text())
    c["normalize_activations"] = "layer_norm"
    (tmp_path / "m" / "cfg.json").write_text(json.dumps(c))
    with pytest.raises(sae_lib.CheckpointError, match="normalize_activations='layer_norm'"):
        load_saelens(tmp_path / "m")


def test_explain_reads_each_format_by_path(tmp_path):
    from texter_jax.converters.artifacts import load_sae

    cfg, ours = _ours()
    save_saelens(tmp_path / "sl", cfg, ours)
    save_dictionary_learning(tmp_path / "ae.pt", cfg, ours)
    sae_lib.save(tmp_path / "mine", cfg, ours)
    x = _x(4)
    want = np.asarray(sae_apply(ours, x, K)[1])
    for where in ("sl", "ae.pt", "mine"):
        got = load_sae(tmp_path / where)
        assert got.top_k == K, where
        np.testing.assert_allclose(sae_apply(got.params, x, got.top_k)[1], want, atol=ATOL)
