"""Reading a measured curve between and just past its points (SPEC section 10)."""

from __future__ import annotations

import numpy as np

from calex_steps.errors import CalexError

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
    t = np.asarray(targets, dtype=np.float64)
    flat = t.ravel()
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.size == 0:
        return np.full(t.shape, np.nan)
    x, y = _merge_duplicates(x, y)
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
        Accuracies with the shape of ``targets``, float64; NaN ("—" in the
        tables) for a target more than ``tolerance`` outside the range
        [min(0, min fr), max fr].
    """
    fr = np.asarray(fr, dtype=np.float64).ravel()
    acc = np.asarray(acc, dtype=np.float64).ravel()
    if fr.shape != acc.shape:
        raise CalexError(f"got {fr.size} FR values but {acc.size} accuracies; pass one per margin")
    if not (np.all(np.isfinite(fr)) and np.all(np.isfinite(acc)) and np.isfinite(backbone_acc)):
        raise CalexError("FR, accuracy and backbone accuracy must be finite numbers")
    return interpolate_curve(np.r_[0.0, fr], np.r_[backbone_acc, acc], targets, tolerance)
