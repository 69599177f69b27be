"""uniform_masks and faithfulness (R² on held-out masks)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spex_ray.faithfulness import faithfulness, uniform_masks
from spex_ray.interactions import Interactions


def test_uniform_masks_shape_dtype_and_determinism():
    masks = uniform_masks(37, 500, seed=4)
    assert masks.shape == (500, 37) and masks.dtype == bool
    np.testing.assert_array_equal(masks, uniform_masks(37, 500, seed=4))
    assert not np.array_equal(masks, uniform_masks(37, 500, seed=5))
    assert abs(masks.mean() - 0.5) < 0.02
    assert uniform_masks(3, 0).shape == (0, 3)


@pytest.mark.parametrize("n, count", [(0, 5), (3, -1), (2.5, 3), (True, 3)])
def test_uniform_masks_errors(n, count):
    with pytest.raises(ValueError, match="must be an integer"):
        uniform_masks(n, count)


def test_faithfulness_is_r2():
    f = Interactions({(): 1.0, (0,): 2.0, (1, 2): -1.0}, 4)
    masks = uniform_masks(4, 200, seed=1)
    y = f.predict(masks)
    assert faithfulness(f, masks, y) == 1.0
    assert faithfulness(f.to("mobius"), masks, y) == pytest.approx(1.0)
    noisy = y + np.random.default_rng(0).normal(scale=0.5, size=len(y))
    expected = 1 - np.sum((noisy - y) ** 2) / np.sum((noisy - noisy.mean()) ** 2)
    assert faithfulness(f, masks, noisy) == pytest.approx(expected)
    mean_only = Interactions({(): float(noisy.mean())}, 4)
    assert faithfulness(mean_only, masks, noisy) == pytest.approx(0.0, abs=1e-12)
    assert faithfulness(f, masks.astype(np.uint8), y.tolist()) == 1.0


@settings(max_examples=25, deadline=None)
@given(
    st.integers(2, 8),
    st.floats(-3, 3).filter(lambda v: abs(v) > 1e-3),
    st.floats(-3, 3).filter(lambda v: abs(v) > 1e-3),
)
def test_faithfulness_of_a_truncation_is_its_energy_share(n, first, last):
    """On all 2^n masks the Fourier basis is orthonormal, so R² of a truncation is its energy share."""
    full = {(): 0.3, (0,): first, (n - 1,): last, (0, n - 1): 1.0}
    truncated = {k: v for k, v in full.items() if len(k) <= 1}
    share = (first**2 + last**2) / (first**2 + last**2 + 1.0)
    masks = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
    values = Interactions(full, n).predict(masks)
    assert faithfulness(Interactions(truncated, n), masks, values) == pytest.approx(share, abs=1e-9)


def test_constant_values():
    masks = uniform_masks(3, 10)
    constant = Interactions({(): 2.0}, 3)
    assert faithfulness(constant, masks, np.full(10, 2.0)) == 1.0
    assert faithfulness(Interactions({(): 2.0, (1,): 1e-15}, 3), masks, np.full(10, 2.0)) == 1.0
    assert faithfulness(Interactions({(): 2.5}, 3), masks, np.full(10, 2.0)) == 0.0
    assert faithfulness(constant, masks[:1], np.array([2.0])) == 1.0


def test_faithfulness_errors():
    f = Interactions({(0,): 1.0}, 3)
    masks = uniform_masks(3, 5)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        faithfulness(f, masks, np.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        faithfulness(f, masks, np.zeros((5, 1)))
    with pytest.raises(ValueError, match="finite"):
        faithfulness(f, masks, np.array([0.0, 1.0, np.nan, 0.0, 1.0]))
    with pytest.raises(ValueError, match="finite"):
        faithfulness(f, masks, np.array([0.0, 1.0, np.inf, 0.0, 1.0]))
    with pytest.raises(ValueError, match="at least one mask"):
        faithfulness(f, np.zeros((0, 3), bool), np.zeros(0))
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        faithfulness(f, np.zeros((5, 4), bool), np.zeros(5))
    with pytest.raises(ValueError, match="not 'shapley'"):
        faithfulness(f.to("shapley"), masks, np.arange(5.0))
