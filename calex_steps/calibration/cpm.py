"""Class Precision Margin (CPM) thresholds (docs/method.md#calibration): the paper's target.

Branch l may release class i at threshold t when the share of exits(t) whose label is i
exceeds (1 - m) times the backbone's precision on class i over the whole calibration set,
P̂_i (strictly). The sorting, tie and infeasibility rules shared with the other targets
are in ``calibration.candidates``. numpy only.
"""

from __future__ import annotations

import numpy as np

from calex_steps.calibration.candidates import (
    Target,
    branch_thresholds,
    check_range,
    class_vector,
)
from calex_steps.errors import CalexError

# The candidate threshold that is always available, and the answer when none qualifies.
NEVER_EXIT = 1.0


def reference_precision(backbone_pred, labels, num_classes: int, weights=None) -> np.ndarray:
    """Backbone precision per class, P̂_i = #{pred = i and y = i} / #{pred = i}.

    Args:
        backbone_pred: (N,) int, the backbone's predicted class per validation sample.
        labels: (N,) int, ground truth.
        num_classes: C.
        weights: (R, N) how often each sample counts in each of R reweighted
            calibration sets (bootstrap resamples), or None (every sample once).

    Returns:
        (C,) float64, or (R, C) with ``weights``. A class the backbone never predicts
        gets NaN: there is no reference precision to keep, and since ``Prec > NaN``
        is never true, ``cpm_thresholds`` gives that class the threshold 1.0
        (branches never release a sample predicted as that class). This is the
        conservative choice: a target of 0 instead would let any branch exit with
        almost any precision on a class the backbone itself never commits to.
    """
    pred = np.asarray(backbone_pred)
    if pred.ndim != 1:
        raise CalexError(f"backbone_pred must be 1-D, got shape {pred.shape}")
    n = pred.shape[0]
    pred = class_vector(pred, n, "backbone_pred")
    labels = class_vector(labels, n, "labels")
    check_range(pred, num_classes, "backbone_pred")
    w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=np.float64)
    one_hot = np.zeros((n, num_classes))
    one_hot[np.arange(n), pred] = 1.0
    predicted = w @ one_hot  # (R, C)
    correct = (w * (pred == labels)) @ one_hot
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(predicted > 0, correct / np.maximum(predicted, 1.0), np.nan)
    return out[0] if weights is None else out


def _hits(pred, labels, backbone_pred) -> list[np.ndarray]:
    """The one quantity CPM counts over exits(t): the branch is right."""
    return [pred == labels]


def _precision_above_reference(exits, counts, keep, ref) -> np.ndarray:
    """Prec_i(t) > (1 - m) * P̂_i, strictly (NaN references never qualify)."""
    precision = counts[0] / np.maximum(exits, 1)
    return precision > keep * ref


CPM = Target("cpm", True, _hits, _precision_above_reference)


def cpm_thresholds(
    conf, pred, labels, ref_precision, margin: float, num_classes: int
) -> np.ndarray:
    """CPM thresholds of one branch on one calibration set (docs/method.md#calibration).

    For class i the candidates are the samples predicted as i. For a threshold t,
    exits(t) are the candidates with R > t (strictly) and Prec_i(t) is the share
    of exits(t) whose label is i (undefined, never qualifying, when exits(t) is
    empty). Candidate thresholds are the observed R values and 1.0; T_i is the
    smallest one with Prec_i(t) > (1 - margin) * ref_precision[i], else 1.0.

    Args:
        conf: (N,) float, the branch's confidence at its prediction.
        pred: (N,) int, the branch's prediction.
        labels: (N,) int, ground truth.
        ref_precision: (C,) float, P̂ (NaN = no reference, never qualifies).
        margin: m in [0, 1].
        num_classes: C.

    Returns:
        (C,) float64 thresholds.
    """
    return branch_thresholds(
        CPM, conf, pred, labels, margin, num_classes, ref_precision=ref_precision
    )
