"""Reading a measured curve at target FRs (SPEC section 10, SPEC 12 interpolate_at_fr)."""

from __future__ import annotations

import numpy as np
import pytest

from calex_steps.errors import CalexError
from calex_steps.tables import interpolate_at_fr

FR = np.array([0.2, 0.5, 0.8])
ACC = np.array([0.9, 0.8, 0.6])
BACKBONE = 0.92


def test_inside_the_measured_range():
    got = interpolate_at_fr(FR, ACC, BACKBONE, [0.35, 0.5, 0.65])
    np.testing.assert_allclose(got, [0.85, 0.8, 0.7])


def test_anchor_at_zero():
    got = interpolate_at_fr(FR, ACC, BACKBONE, [0.0, 0.1])
    np.testing.assert_allclose(got, [0.92, 0.91])


def test_extrapolation_within_tolerance_then_nan():
    got = interpolate_at_fr(FR, ACC, BACKBONE, [0.86, 0.88, 0.89, 1.2])
    np.testing.assert_allclose(got[:2], [0.56, 0.6 - 0.08 * 2 / 3])
    assert np.isnan(got[2]) and np.isnan(got[3])
    # The tolerance is an argument.
    assert not np.isnan(interpolate_at_fr(FR, ACC, BACKBONE, [0.89], tolerance=0.1)[0])


def test_unsorted_input_gives_the_same_curve():
    order = [2, 0, 1]
    targets = [0.1, 0.4, 0.6, 0.85]
    np.testing.assert_allclose(
        interpolate_at_fr(FR[order], ACC[order], BACKBONE, targets),
        interpolate_at_fr(FR, ACC, BACKBONE, targets),
    )


def test_duplicate_fr_values_are_averaged():
    got = interpolate_at_fr([0.5, 0.5, 0.8], [0.8, 0.7, 0.6], BACKBONE, [0.5, 0.65])
    np.testing.assert_allclose(got, [0.75, 0.675])


def test_negative_fr_point_and_scalar_target():
    # A margin where nothing exits costs the heads too: FR slightly below 0.
    got = interpolate_at_fr([-0.01, 0.3], [0.92, 0.85], 0.92, 0.35)
    assert got.shape == ()
    np.testing.assert_allclose(got, 0.85 - 0.05 * 0.07 / 0.3)
    assert np.isnan(interpolate_at_fr([-0.01, 0.3], [0.92, 0.85], 0.92, 0.4))


def test_mismatched_lengths_raise():
    with pytest.raises(CalexError, match="one per margin"):
        interpolate_at_fr([0.1, 0.2], [0.9], BACKBONE, [0.4])
    with pytest.raises(CalexError, match="finite"):
        interpolate_at_fr([0.1, np.nan], [0.9, 0.8], BACKBONE, [0.4])
