"""Our integrated gradients against captum 0.9 on a small torch MLP head."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

from texter_jax.contributions import METHODS, ig_features  # noqa: E402


@pytest.mark.parametrize("method", METHODS)
def test_matches_captum(method):
    torch.manual_seed(0)
    d, h, c, b = 24, 32, 7, 5
    mlp = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.GELU(approximate="tanh"),
                              torch.nn.Linear(h, c))
    z = torch.randn(b, d) * 2
    cls = torch.tensor([0, 6, 3, 3, 1])
    ref = captum_attr.IntegratedGradients(mlp).attribute(
        z, baselines=torch.zeros_like(z), target=cls, n_steps=100, method=method)
    w1, b1, w2, b2 = (p.detach().numpy() for p in mlp.parameters())

    def head(x):
        x = x @ w1.T + b1
        x = 0.5 * x * (1 + jnp.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
        return x @ w2.T + b2

    ours = ig_features(head, jnp.asarray(z.numpy()), jnp.asarray(cls.numpy()),
                       steps=100, method=method)
    scale = float(ref.abs().max())
    err = float(np.abs(np.asarray(ours) - ref.numpy()).max())
    assert err <= 1e-5 * max(1.0, scale), (method, err, scale)
