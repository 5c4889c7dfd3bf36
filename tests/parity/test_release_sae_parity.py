"""The JAX TopK SAE and aligner against the release's torch modules and file formats.

The release vendors ``overcomplete``; its PyPI wheel pulls in timm, opencv and
scikit-image through the package ``__init__``, so instead this test rebuilds the exact
module structure the release instantiates (default "linear" encoder = Linear + Identity
inside ``final_block``; DictionaryLayer with ``_weights`` and the ``multiplier`` buffer,
fused and L2-normalised on ``.eval()``). If the real package is importable, it is used
as well (``test_real_overcomplete``).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from texter_jax.converters.release import (  # noqa: E402
    export_release_aligner,
    export_release_sae,
    load_release_aligner,
    load_release_sae,
)
from texter_jax.sae import SaeConfig, init_sae, sae_decode, sae_encode  # noqa: E402

# fp32 matmuls of width <= 512 on both sides: differences stay ~1e-6.
ATOL = 1e-5


class _Encoder(nn.Module):
    def __init__(self, d, n):
        super().__init__()
        self.final_block = nn.Sequential(nn.Linear(d, n), nn.Identity())

    def forward(self, x):
        pre = self.final_block(x)
        return pre, torch.relu(pre)


class _Dictionary(nn.Module):
    def __init__(self, d, n):
        super().__init__()
        self._weights = nn.Parameter(torch.empty(n, d))
        nn.init.xavier_uniform_(self._weights)
        self.register_buffer("multiplier", torch.tensor(0.0))
        self._fused = None

    def _dict(self):
        w = self._weights / (torch.norm(self._weights, p=2, dim=1, keepdim=True) + 1e-8)
        return w * torch.exp(self.multiplier)

    def train(self, mode=True):
        if not mode:
            self._fused = self._dict().detach()
        return super().train(mode)

    def forward(self, z):
        return z @ (self._dict() if self.training else self._fused)


class _TopKSAE(nn.Module):
    """Same parameter names and eval-time behaviour as the release's TopKSAE."""

    def __init__(self, d, n, k):
        super().__init__()
        self.encoder = _Encoder(d, n)
        self.dictionary = _Dictionary(d, n)
        self.top_k = k

    def encode(self, x):
        pre, codes = self.encoder(x)
        top = torch.topk(codes, self.top_k, dim=-1)
        return pre, torch.zeros_like(codes).scatter(-1, top.indices, top.values)

    def forward(self, x):
        pre, codes = self.encode(x)
        return pre, codes, self.dictionary(codes)


def _release_file(tmp_path, d=64, n=512, k=51, seed=0, unnormalised=True):
    torch.manual_seed(seed)
    sae = _TopKSAE(d, n, k)
    if unnormalised:  # trained files hold raw rows: make their norms far from 1
        with torch.no_grad():
            sae.dictionary._weights.mul_(torch.rand(n, 1) * 3 + 0.5)
    path = tmp_path / "sae_model.pth"
    torch.save({"model_state_dict": sae.state_dict(),
                "args": argparse.Namespace(model_name="resnet50", lr=5e-4),
                "input_dim": d, "nb_concepts": n, "top_k": k}, path)
    sae.eval()
    return sae, path


def test_state_dict_keys_are_the_release_keys(tmp_path):
    sae, _ = _release_file(tmp_path)
    assert set(sae.state_dict()) == {"encoder.final_block.0.weight", "encoder.final_block.0.bias",
                                     "dictionary._weights", "dictionary.multiplier"}


def test_load_release_sae_matches_torch(tmp_path):
    sae, path = _release_file(tmp_path)
    config, params = load_release_sae(path)
    assert config == SaeConfig(64, 512, 51)
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        pre_t, codes_t, xhat_t = (t.numpy() for t in sae(x))
    pre, codes = sae_encode(params, jnp.asarray(x.numpy()), config.top_k)
    xhat = sae_decode(params, codes)
    np.testing.assert_allclose(pre, pre_t, atol=ATOL)
    np.testing.assert_allclose(codes, codes_t, atol=ATOL)
    np.testing.assert_allclose(xhat, xhat_t, atol=ATOL)
    assert (np.count_nonzero(np.asarray(codes), axis=-1) <= 51).all()


def test_export_roundtrip_loads_in_torch(tmp_path):
    config = SaeConfig(32, 256, 25)
    params = jax.tree.map(np.asarray, init_sae(jax.random.key(3), config))
    path = export_release_sae(tmp_path / "out.pth", config, params)
    ckpt = torch.load(path, weights_only=True)
    sae = _TopKSAE(ckpt["input_dim"], ckpt["nb_concepts"], ckpt["top_k"])
    sae.load_state_dict(ckpt["model_state_dict"])  # strict: exact key set
    sae.eval()
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, codes_t, xhat_t = sae(x)
    _, codes = sae_encode(params, jnp.asarray(x.numpy()), config.top_k)
    np.testing.assert_allclose(codes, codes_t.numpy(), atol=ATOL)
    np.testing.assert_allclose(sae_decode(params, codes), xhat_t.numpy(), atol=ATOL)
    config2, params2 = load_release_sae(path)
    assert config2 == config
    jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_aligner_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 40)).astype(np.float32)
    b = rng.normal(size=(16,)).astype(np.float32)
    # the release's save_W: torch tensors under "b" then "W"
    torch.save({"b": torch.from_numpy(b), "W": torch.from_numpy(w)}, tmp_path / "a.pth")
    w2, b2 = load_release_aligner(tmp_path / "a.pth")
    np.testing.assert_array_equal(w2, w)
    np.testing.assert_array_equal(b2, b)
    export_release_aligner(tmp_path / "b.pth", w, b)
    d = torch.load(tmp_path / "b.pth")  # the release's load_W call
    assert list(d) == ["b", "W"] and d["W"].dtype == torch.float32
    np.testing.assert_array_equal(d["W"].numpy(), w)


def test_real_overcomplete(tmp_path):
    oc = pytest.importorskip("overcomplete.sae")
    torch.manual_seed(0)
    sae = oc.TopKSAE(48, nb_concepts=384, top_k=38)
    torch.save({"model_state_dict": sae.state_dict(), "input_dim": 48,
                "nb_concepts": 384, "top_k": 38}, tmp_path / "s.pth")
    sae.eval()
    config, params = load_release_sae(tmp_path / "s.pth")
    x = torch.randn(5, 48)
    with torch.no_grad():
        _, codes_t, xhat_t = sae(x)
    _, codes = sae_encode(params, jnp.asarray(x.numpy()), config.top_k)
    np.testing.assert_allclose(codes, codes_t.numpy(), atol=ATOL)
    np.testing.assert_allclose(sae_decode(params, codes), xhat_t.numpy(), atol=ATOL)
