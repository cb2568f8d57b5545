"""Reading a measured curve between and just past its points (docs/method.md#comparison)."""

from __future__ import annotations

import numpy as np

from calex_steps.errors import CalexError

# How a reading relates to the measured range, worst first when runs are pooled.
MEASURED, EXTRAPOLATED, MISSING = 0, 1, 2
STATUS_NAMES = ("measured", "extrapolated", "missing")

# Slack when testing a target against the measured range, so that e.g. 0.4 + 0.08
# computed in floating point still counts as "within 0.08".
_RANGE_EPS = 1e-9


def _merge_duplicates(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort points by x and average y over points that share the same x."""
    ux, inverse = np.unique(x, return_inverse=True)  # ux sorted ascending
    uy = np.bincount(inverse, weights=y) / np.bincount(inverse)
    return ux, uy


def interpolate_curve(x, y, targets, tolerance: float = 0.08) -> np.ndarray:
    """A piecewise-linear curve through (x, y) read at ``targets``.

    Points in any order; points sharing an x are merged at their mean y. Past
    either end the curve continues along its end segment, by at most
    ``tolerance``; a target further out is NaN, and so is every target of a
    curve without points. Returns float64 with the shape of ``targets``.
    """
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.size == 0:
        return np.full(np.shape(targets), np.nan)
    return _read_merged(*_merge_duplicates(x, y), targets, tolerance)


def _read_merged(x: np.ndarray, y: np.ndarray, targets, tolerance: float) -> np.ndarray:
    """``interpolate_curve`` on points already sorted and merged (``_merge_duplicates``)."""
    t = np.asarray(targets, dtype=np.float64)
    flat = t.ravel()
    if x.size == 1:
        out = np.full(flat.shape, y[0])
    else:
        out = np.interp(flat, x, y)
        above, below = flat > x[-1], flat < x[0]
        slope_hi = (y[-1] - y[-2]) / (x[-1] - x[-2])
        slope_lo = (y[1] - y[0]) / (x[1] - x[0])
        out[above] = y[-1] + (flat[above] - x[-1]) * slope_hi
        out[below] = y[0] + (flat[below] - x[0]) * slope_lo
    outside = (flat < x[0] - tolerance - _RANGE_EPS) | (flat > x[-1] + tolerance + _RANGE_EPS)
    out[outside] = np.nan
    return out.reshape(t.shape)


def interpolate_at_fr(fr, acc, backbone_acc: float, targets, tolerance: float = 0.08) -> np.ndarray:
    """Accuracy of one seed's Pareto curve at target FLOPs reductions.

    The measured (FR, accuracy) points, in any order, are joined by the anchor
    (0, backbone_acc): the backbone alone is a real operating point at FR 0.
    Points sharing an FR (the anchor included, if a margin lands exactly on 0)
    are merged into one point at their mean accuracy. Between points the curve
    is linear; past the largest FR it continues along the last segment (and
    below the smallest point, which is only ever a negative FR, along the first).

    Args:
        fr: (M,) measured FLOPs reductions, one per margin.
        acc: (M,) accuracies at those points.
        backbone_acc: the backbone's accuracy (the anchor).
        targets: (T,) FRs to read the curve at (a scalar works too).
        tolerance: how far beyond the range spanned by the anchor and the
            measured points a target may lie and still be extrapolated.

    Returns:
        Accuracies with the shape of ``targets``, float64, within [0, 1] even
        where a steep last segment is continued, and past the largest FR never
        above the accuracy measured there (``cap_past_end``); NaN ("—" in the
        tables) for a target more than ``tolerance`` outside the range
        [min(0, min fr), max fr].
    """
    fr = np.asarray(fr, dtype=np.float64).ravel()
    acc = np.asarray(acc, dtype=np.float64).ravel()
    if fr.shape != acc.shape:
        raise CalexError(f"got {fr.size} FR values but {acc.size} accuracies; pass one per margin")
    if not (np.all(np.isfinite(fr)) and np.all(np.isfinite(acc)) and np.isfinite(backbone_acc)):
        raise CalexError("FR, accuracy and backbone accuracy must be finite numbers")
    x, y = _merge_duplicates(np.r_[0.0, fr], np.r_[backbone_acc, acc])
    curve = cap_past_end(_read_merged(x, y, targets, tolerance), targets, x[-1], y[-1])
    return np.clip(curve, 0.0, 1.0)  # NaN stays NaN; an extrapolated accuracy stays in [0, 1]


def cap_past_end(curve, targets, last_x, last_y) -> np.ndarray:
    """Readings past the last measured reduction, never above the accuracy measured there.

    A frontier's last two points can sit close together with the later one a little
    more accurate (test-set noise); continuing that segment would promise accuracy
    that rises with the reduction, up to above the backbone's. ``curve`` is (T,) or
    (T, B) with ``last_x`` and ``last_y`` scalars or (B,); NaN stays NaN.
    """
    curve = np.asarray(curve, np.float64)
    t = np.asarray(targets, np.float64)
    t = t.reshape(curve.shape) if curve.ndim <= 1 else t.reshape(-1, 1)
    return np.where(t > last_x, np.minimum(curve, last_y), curve)


# ---- many curves at once: one curve per column --------------------------------------
#
# The bootstrap reads thousands of resampled curves; these functions read all of them in
# one pass. A curve is a column of (P, B) arrays x and y; it gets exactly the treatment
# ``interpolate_curve`` gives one curve (sorted, points sharing an x merged at their
# mean y, linear between points, end segments continued), without the NaN cut-off: the
# caller decides what lies too far out from ``x_range``.


def merge_columns(x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort every column of (P, B) arrays by x and merge the points sharing an x.

    Returns:
        mx, my: (P, B) merged points, ascending in the first ``count`` rows of
        each column, NaN below them.
        count: (B,) number of distinct x values per column (at least 1).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or x.shape != y.shape or x.shape[0] == 0:
        raise CalexError(f"curve arrays must share one (points, curves) shape, got {x.shape}")
    points, curves = x.shape
    order = np.argsort(x, axis=0, kind="stable")
    xs, ys = np.take_along_axis(x, order, 0), np.take_along_axis(y, order, 0)
    starts = np.ones(x.shape, dtype=bool)
    starts[1:] = xs[1:] != xs[:-1]
    group = np.cumsum(starts, axis=0) - 1  # (P, B): merged row of each sorted point
    flat = (group * curves + np.arange(curves)).ravel()
    size = points * curves
    counts = np.bincount(flat, minlength=size).reshape(points, curves)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = np.bincount(flat, xs.ravel(), minlength=size).reshape(points, curves) / counts
        my = np.bincount(flat, ys.ravel(), minlength=size).reshape(points, curves) / counts
    return mx, my, group[-1] + 1


def x_range(mx: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B,) smallest and largest x of merged columns (``merge_columns`` output)."""
    columns = np.arange(mx.shape[1])
    return mx[0], mx[count - 1, columns]


def read_columns(mx: np.ndarray, my: np.ndarray, count: np.ndarray, targets) -> np.ndarray:
    """Every merged column read at every target: (T, B).

    Linear between points, continued along the end segments past either end
    (a column with one point is constant). Same values as ``interpolate_curve``
    wherever that one does not return NaN.
    """
    t = np.asarray(targets, np.float64).reshape(-1, 1, 1)  # (T, 1, 1)
    columns = np.arange(mx.shape[1])
    below = np.sum(mx[None] <= t, axis=1)  # (T, B); NaN rows never count
    lower = np.clip(below - 1, 0, np.maximum(count - 2, 0))  # left end of the segment
    upper = np.minimum(lower + 1, count - 1)
    x0, x1 = mx[lower, columns], mx[upper, columns]
    y0, y1 = my[lower, columns], my[upper, columns]
    width = np.where(upper > lower, x1 - x0, 1.0)
    slope = np.where(upper > lower, (y1 - y0) / width, 0.0)
    return y0 + (t[:, :, 0] - x0) * slope


def largest_x_within(mx, my, count, level: float) -> np.ndarray:
    """(B,) the largest x up to which each merged column stays within ``level``.

    The first crossing: from the column's first point at x >= 0 (the anchor of a
    cascade's curve), the x where y first rises above ``level``, interpolated on the
    segment where it does; a later dip back under ``level`` does not count. Where
    the curve is still within ``level`` at its last point, the last segment is
    continued to where it crosses ``level`` (``inf`` when it does not rise). NaN for
    a column without a point at x >= 0 or whose first such point is above ``level``.
    """
    columns = np.arange(mx.shape[1])
    row = np.arange(mx.shape[0])[:, None]
    valid = (row < count) & (mx >= 0)  # NaN padding never counts
    start = valid.argmax(axis=0)
    over = valid & (my > level) & (row > start)
    crossed, j = over.any(axis=0), over.argmax(axis=0)
    before = np.maximum(j - 1, 0)
    x0, y0, x1, y1 = mx[before, columns], my[before, columns], mx[j, columns], my[j, columns]
    last = count - 1
    xl, yl = mx[last, columns], my[last, columns]
    xp, yp = mx[np.maximum(last - 1, 0), columns], my[np.maximum(last - 1, 0), columns]
    rising = (last > start) & (yl > yp)
    with np.errstate(invalid="ignore", divide="ignore"):
        crossing = x0 + (level - y0) / (y1 - y0) * (x1 - x0)
        beyond = np.where(rising, xl + (level - yl) / (yl - yp) * (xl - xp), np.inf)
    out = np.where(crossed, crossing, beyond)
    within_at_start = valid.any(axis=0) & (my[start, columns] <= level)
    return np.where(within_at_start, out, np.nan)


def reading_status(value, low: float, high: float, tolerance: float) -> np.ndarray:
    """Status of readings at ``value`` (a target, or an iso-loss FR) on a curve spanning
    [low, high]: ``MEASURED`` inside, ``EXTRAPOLATED`` up to ``tolerance`` outside,
    ``MISSING`` further out or NaN."""
    value = np.asarray(value, np.float64)
    out = np.where((value > high) | (value < low), EXTRAPOLATED, MEASURED)
    far = (value > high + tolerance + _RANGE_EPS) | (value < low - tolerance - _RANGE_EPS)
    return np.where(far | np.isnan(value), MISSING, out).astype(np.int8)
