"""Survivor weights and weighted sampling (docs/method.md#training)."""

import numpy as np
import pytest

from calex_steps.errors import CalexError
from calex_steps.weighting import sample_indices, survivor_weights


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's statistic of observed counts against expected probabilities (probs > 0)."""
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_survivor_weights_values():
    w = survivor_weights([np.array([0.5, 0.0, 1.0, 0.9]), np.array([0.5, 0.2, 0.3, 0.5])])
    np.testing.assert_allclose(w, [0.25, 0.8, 0.0, 0.05])


def test_branch_one_weights_are_ones():
    np.testing.assert_array_equal(survivor_weights([], num_samples=3), np.ones(3))
    w = survivor_weights([])
    assert w.shape == () and float(w) == 1.0


def test_survivor_weights_reject_bad_confidences():
    with pytest.raises(CalexError, match=r"in \[0, 1\]"):
        survivor_weights([np.array([0.5, 1.2])])
    with pytest.raises(CalexError, match="expected 3"):
        survivor_weights([np.array([0.5, 0.2])], num_samples=3)


def test_sampling_follows_the_weights():
    weights = np.array([1.0, 2.0, 3.0, 4.0, 0.0])
    draws = sample_indices(weights, 20_000, np.random.default_rng(0))
    counts = np.bincount(draws, minlength=5)
    assert counts[4] == 0  # zero weight: never drawn
    probs = weights[:4] / weights.sum()
    critical = 16.27  # chi-square, 3 degrees of freedom, p = 0.001
    assert chi_square(counts[:4], probs) < critical
    # The same check rejects uniform draws, so it would catch a sampler ignoring weights.
    uniform = np.bincount(np.random.default_rng(0).integers(0, 4, 20_000), minlength=4)
    assert chi_square(uniform, probs) > critical


def test_sampling_is_reproducible_and_sized():
    w = np.array([0.2, 0.0, 0.8])
    a = sample_indices(w, 7, np.random.default_rng(3))
    b = sample_indices(w, 7, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (7,) and a.dtype == np.int64 and not np.any(a == 1)


def test_sampling_rejects_bad_weights():
    rng = np.random.default_rng(0)
    with pytest.raises(CalexError, match="every survivor weight is zero"):
        sample_indices(np.zeros(4), 4, rng)
    with pytest.raises(CalexError, match="non-negative"):
        sample_indices(np.array([1.0, -0.5]), 4, rng)
