"""Reading a measured curve at target FRs (docs/method.md#comparison, interpolate_at_fr)."""

from __future__ import annotations

import numpy as np
import pytest

from calex_steps.errors import CalexError
from calex_steps.reporting.bootstrap import axis_readings
from calex_steps.reporting.curves import (
    EXTRAPOLATED,
    MEASURED,
    MISSING,
    STATUS_NAMES,
    interpolate_curve,
    largest_x_within,
    merge_columns,
    read_columns,
    reading_status,
    x_range,
)
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


def test_many_curves_at_once_read_as_one_curve_at_a_time():
    # Random curves with shared x values (merged at their mean), read inside and past the ends.
    rng = np.random.default_rng(0)
    x = np.round(rng.uniform(-0.05, 0.7, size=(9, 50)), 1)
    y = rng.uniform(0.5, 0.95, size=(9, 50))
    mx, my, count = merge_columns(x, y)
    targets = np.linspace(-0.2, 0.9, 23)
    got = read_columns(mx, my, count, targets)
    for column in range(50):
        want = interpolate_curve(x[:, column], y[:, column], targets, tolerance=10.0)
        np.testing.assert_allclose(got[:, column], want)
    low, high = x_range(mx, count)
    np.testing.assert_allclose(low, x.min(axis=0))
    np.testing.assert_allclose(high, x.max(axis=0))


def test_largest_x_within_a_budget_is_the_first_crossing_by_hand():
    # Loss rises 0 -> 2 over x 0..0.4, dips to 0.8 at 0.5, rises to 3 at 0.6.
    x = np.array([[0.0], [0.4], [0.5], [0.6]])
    loss = np.array([[0.0], [2.0], [0.8], [3.0]])
    mx, my, count = merge_columns(x, loss)
    got = [largest_x_within(mx, my, count, level)[0] for level in (0.5, 1.0, 5.0)]
    # 0.5 and 1.0: crossed on the first segment, at 0.1 and 0.2 (the dip under 1.0 at
    # 0.5 does not count); 5.0: still within at the end, the last segment reaches 5 at
    # 0.6 + 2/2.2 · 0.1.
    np.testing.assert_allclose(got, [0.1, 0.2, 0.6 + 0.1 * 2 / 2.2])
    flat = merge_columns(np.array([[0.0], [0.3]]), np.array([[0.0], [-1.0]]))
    assert np.isinf(largest_x_within(*flat, 1.0)[0])  # never rises: no crossing
    # A point at negative x (a cascade dearer than the backbone) is not where the curve
    # starts: above the budget there, the reading still starts at the anchor.
    early = merge_columns(np.array([[-0.1], [0.0], [0.2]]), np.array([[3.0], [0.0], [2.0]]))
    np.testing.assert_allclose(largest_x_within(*early, 1.0), [0.1])
    above = merge_columns(np.array([[0.0], [0.2]]), np.array([[1.5], [2.0]]))
    assert np.isnan(largest_x_within(*above, 1.0)[0])  # over the budget from the start


def test_reading_status_inside_within_tolerance_and_beyond():
    status = reading_status([0.3, 0.62, 0.7, 0.7001, np.nan], 0.0, 0.62, 0.08)
    assert [STATUS_NAMES[s] for s in status] == [
        "measured", "measured", "extrapolated", "missing", "missing",
    ]  # fmt: skip
    assert status[0] == MEASURED and status[2] == EXTRAPOLATED and status[3] == MISSING


def test_a_steep_last_segment_continued_stays_a_possible_accuracy():
    # FR barely moves between the last two margins while accuracy drops: continuing
    # that segment 0.05 further would go far below zero.
    acc = interpolate_at_fr([0.60, 0.61], [0.70, 0.40], 0.9, [0.66], tolerance=0.08)
    assert acc[0] == 0.0
    assert np.isnan(interpolate_at_fr([0.60, 0.61], [0.70, 0.40], 0.9, [0.75])[0])


def test_a_rising_last_segment_does_not_promise_more_than_was_measured():
    # The last two margins are close, the later one 2 points more accurate (test noise):
    # continued, that segment would rise above the backbone within the tolerance.
    fr, acc = [0.30, 0.50, 0.51], [0.85, 0.70, 0.72]
    got = interpolate_at_fr(fr, acc, 0.9, [0.505, 0.55, 0.58])
    np.testing.assert_allclose(got, [0.71, 0.72, 0.72])
    # the bootstrap's many-curves reading agrees, loss in points
    x = np.array([fr, fr]).T
    y = np.array([acc, acc]).T
    out = axis_readings(x, y, np.array([0.9, 0.9]), np.array([0.505, 0.55, 0.58]), 0.08)
    np.testing.assert_allclose(out["loss"][0][:, 0], [19.0, 18.0, 18.0])
