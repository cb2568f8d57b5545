"""Statistics of the calibration and shift figures, each against a hand computation."""

import numpy as np
import pytest

from calex_steps.errors import CalexError
from calex_steps.reporting.metrics import (
    class_distribution,
    expected_calibration_error,
    gini_coefficient,
    kl_divergence,
    top_k_share,
)


def test_ece_by_hand():
    # Bins of width 0.25 on [0, 1]: {0.1, 0.2} in bin 0, {0.6} in bin 2, {0.9, 1.0} in bin 3.
    conf = [0.1, 0.2, 0.6, 0.9, 1.0]
    correct = [0, 1, 1, 1, 0]
    # bin 0: |1 - 0.3| = 0.7; bin 2: |1 - 0.6| = 0.4; bin 3: |1 - 1.9| = 0.9; sum 2.0 over 5.
    got = expected_calibration_error(conf, correct, low=0.0, high=1.0, bins=4)
    assert got == pytest.approx(0.4)


def test_ece_bins_start_at_the_lowest_threshold():
    # On [0.5, 1] with 10 bins, 0.52 and 0.58 fall in different bins (edges 0.5, 0.55, ...).
    got = expected_calibration_error([0.52, 0.58], [1, 0], low=0.5)
    assert got == pytest.approx((0.48 + 0.58) / 2)
    # One wide bin merges them: |1 - 1.10| / 2.
    assert expected_calibration_error([0.52, 0.58], [1, 0], 0.0, bins=1) == pytest.approx(0.05)


def test_ece_empty_and_bad_input():
    assert np.isnan(expected_calibration_error([], [], low=0.3))
    with pytest.raises(CalexError, match="correctness"):
        expected_calibration_error([0.5], [1, 0], low=0.3)
    with pytest.raises(CalexError, match="high > low"):
        expected_calibration_error([0.5], [1], low=1.0)


def test_class_distribution_and_smoothing():
    np.testing.assert_allclose(class_distribution([0, 0, 2], 3), [2 / 3, 0, 1 / 3])
    np.testing.assert_allclose(
        class_distribution([0, 0, 2], 3, pseudo_count=0.5), [2.5 / 4.5, 0.5 / 4.5, 1.5 / 4.5]
    )
    assert np.isnan(class_distribution([], 3)).all()
    with pytest.raises(CalexError, match="0..2"):
        class_distribution([3], 3)


def test_kl_by_hand():
    p, q = [0.5, 0.5], [0.25, 0.75]
    expected = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    assert kl_divergence(p, q) == pytest.approx(expected)
    assert kl_divergence(p, p) == 0.0
    assert kl_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(np.log(2))  # 0·log 0 = 0
    assert kl_divergence([0.5, 0.5], [1.0, 0.0]) == np.inf


def test_gini_by_hand():
    assert gini_coefficient([5, 5, 5, 5]) == 0.0
    assert gini_coefficient([0, 0, 0, 8]) == pytest.approx(3 / 4)  # (n-1)/n
    # [1, 2, 3]: Σ|xi - xj| over ordered pairs = 8, / (2 · 9 · 2) = 2/9.
    assert gini_coefficient([3, 1, 2]) == pytest.approx(2 / 9)
    assert np.isnan(gini_coefficient([0, 0]))
    with pytest.raises(CalexError, match="non-negative"):
        gini_coefficient([-1, 2])


def test_top3_share_by_hand():
    assert top_k_share([1, 2, 3, 4], 3) == pytest.approx(9 / 10)
    assert top_k_share([5, 5], 3) == 1.0
    assert np.isnan(top_k_share([0, 0, 0]))
