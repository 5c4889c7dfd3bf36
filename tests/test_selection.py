"""Exact selection against numpy: order statistics equal the sorted element, percentiles
equal np.percentile (linear) to float32 rounding of the final interpolation."""

import jax
import numpy as np
import pytest

from texter_jax.selection import kth_smallest, percentile


def _cases():
    rng = np.random.default_rng(0)
    yield "normal", rng.normal(size=(96, 80, 3)).astype(np.float32) * 5
    yield "ties", np.round(rng.normal(size=(4001,)) * 2).astype(np.float32)
    yield "negative", -rng.exponential(size=(333,)).astype(np.float32)
    yield "signed zeros", np.array([0.0, -0.0, 1.0, -1.0, 0.0, -0.0], np.float32)
    # (normal floats only: XLA on CPU flushes subnormals to zero in arithmetic)
    yield "tiny and huge", np.array([2e-38, -2e-38, 3e38, -3e38, 1.0, 2.0, 5e-38], np.float32)
    yield "one", np.array([7.5], np.float32)


@pytest.mark.parametrize("name,x", list(_cases()))
def test_order_statistics_equal_sort(name, x):
    ordered = np.sort(x.ravel())
    select = jax.jit(kth_smallest, static_argnums=1)
    for k in sorted({0, 1, x.size // 3, x.size // 2, x.size - 2, x.size - 1} & set(range(x.size))):
        assert float(select(x, k)) == float(ordered[k]), (name, k)


@pytest.mark.parametrize("name,x", list(_cases()))
@pytest.mark.parametrize("q", [0.0, 1.0, 12.34, 50.0, 80.0, 99.0, 100.0])
def test_percentile_matches_numpy_linear(name, x, q):
    ours = float(jax.jit(percentile, static_argnums=1)(x, q))
    ref = float(np.percentile(x, q))
    assert ours == pytest.approx(ref, rel=2e-7, abs=1e-45), (name, q)


def test_percentile_nan_and_bad_q():
    assert np.isnan(float(percentile(np.array([1.0, np.nan, 3.0], np.float32), 50.0)))
    with pytest.raises(ValueError, match="q=101"):
        percentile(np.zeros(3, np.float32), 101.0)
    with pytest.raises(ValueError, match="k=3"):
        kth_smallest(np.zeros(3, np.float32), 3)
