"""Class Precision Margin (CPM) thresholds, per branch and per cascade (SPEC section 7).

Everything here is numpy on 1-D per-sample arrays; no Python loop runs over samples.
Thresholds are float64 arrays; a float32 confidence converts to float64 exactly, so
``R > T`` gives the same answer whether it is evaluated in float32 or float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calex_steps.errors import CalexError

# The candidate threshold that is always available, and the answer when none qualifies.
NEVER_EXIT = 1.0


def _as_class_vector(values, n: int, name: str) -> np.ndarray:
    """Return ``values`` as an int64 vector of length ``n`` with entries in [0, num_classes)."""
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise CalexError(f"{name} has shape {arr.shape}, expected ({n},) like the confidences")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise CalexError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def reference_precision(backbone_pred, labels, num_classes: int) -> np.ndarray:
    """Backbone precision per class, P̂_i = #{pred = i and y = i} / #{pred = i}.

    Args:
        backbone_pred: (N,) int, the backbone's predicted class per validation sample.
        labels: (N,) int, ground truth.
        num_classes: C.

    Returns:
        (C,) float64. A class the backbone never predicts gets NaN: there is no
        reference precision to keep, and since ``Prec > NaN`` is never true,
        ``cpm_thresholds`` gives that class the threshold 1.0 (branches never
        release a sample predicted as that class). This is the conservative
        choice: a target of 0 instead would let any branch exit with almost
        any precision on a class the backbone itself never commits to.
    """
    pred = np.asarray(backbone_pred)
    n = pred.shape[0] if pred.ndim == 1 else -1
    if n < 0:
        raise CalexError(f"backbone_pred must be 1-D, got shape {pred.shape}")
    pred = _as_class_vector(pred, n, "backbone_pred")
    labels = _as_class_vector(labels, n, "labels")
    _check_range(pred, num_classes, "backbone_pred")
    predicted = np.bincount(pred, minlength=num_classes).astype(np.float64)  # (C,)
    correct = np.bincount(pred[pred == labels], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(predicted > 0, correct / np.maximum(predicted, 1.0), np.nan)


def _check_range(classes: np.ndarray, num_classes: int, name: str) -> None:
    """Raise if any class index lies outside [0, num_classes)."""
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        raise CalexError(
            f"{name} holds class indices outside [0, {num_classes}); "
            "check num_classes against the files that produced the predictions"
        )


def cpm_thresholds(
    conf, pred, labels, ref_precision, margin: float, num_classes: int
) -> np.ndarray:
    """CPM thresholds of one branch on one calibration set (SPEC section 7).

    For class i the candidates are the samples predicted as i. For a threshold t,
    exits(t) are the candidates with R > t (strictly) and Prec_i(t) is the share
    of exits(t) whose label is i (undefined, never qualifying, when exits(t) is
    empty). Candidate thresholds are the observed R values and 1.0; T_i is the
    smallest one with Prec_i(t) > (1 - margin) * ref_precision[i], else 1.0.

    Vectorised: one lexsort by (class, -R); the exits above a tie group are the
    candidates of the same class before the group's first position, read from
    exclusive cumulative counts. One virtual candidate per class at R = 1.0,
    counted neither as an exit nor as correct, supplies the candidate t = 1.0.

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
    conf = np.asarray(conf)
    if conf.ndim != 1:
        raise CalexError(f"conf must be 1-D, got shape {conf.shape}")
    n = conf.shape[0]
    conf = conf.astype(np.float64)  # exact for float32 input
    if not np.all(np.isfinite(conf)):
        raise CalexError("conf holds NaN or infinite confidences; check the branch outputs")
    pred = _as_class_vector(pred, n, "pred")
    labels = _as_class_vector(labels, n, "labels")
    _check_range(pred, num_classes, "pred")
    ref = np.asarray(ref_precision, dtype=np.float64)
    if ref.shape != (num_classes,):
        raise CalexError(f"ref_precision has shape {ref.shape}, expected ({num_classes},)")
    if not 0.0 <= margin <= 1.0:
        raise CalexError(f"margin {margin} is outside [0, 1]; fix the sweep margins")
    target = (1.0 - margin) * ref  # (C,)

    # Real samples followed by one virtual candidate per class at R = 1.0.
    r = np.concatenate([conf, np.full(num_classes, NEVER_EXIT)])  # (N+C,)
    cls = np.concatenate([pred, np.arange(num_classes)])
    real = np.concatenate([np.ones(n, np.int64), np.zeros(num_classes, np.int64)])
    hit = np.concatenate([(pred == labels).astype(np.int64), np.zeros(num_classes, np.int64)])

    order = np.lexsort((-r, cls))  # by class, then R descending
    r, cls, real, hit = r[order], cls[order], real[order], hit[order]
    before_real = np.cumsum(real) - real  # (N+C,) real samples strictly before each position
    before_hit = np.cumsum(hit) - hit

    new_class = np.empty(r.shape[0], dtype=bool)
    new_class[0] = True
    new_class[1:] = cls[1:] != cls[:-1]
    new_group = new_class.copy()
    new_group[1:] |= r[1:] != r[:-1]  # a tie group = equal (class, R)

    positions = np.arange(r.shape[0])
    class_start = np.maximum.accumulate(np.where(new_class, positions, 0))  # (N+C,)
    g = np.flatnonzero(new_group)  # first position of each tie group
    exits = before_real[g] - before_real[class_start[g]]  # candidates with R > r[g]
    correct = before_hit[g] - before_hit[class_start[g]]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = correct / np.maximum(exits, 1)
        qualifies = (exits > 0) & (precision > target[cls[g]])

    thresholds = np.full(num_classes, np.inf)
    np.minimum.at(thresholds, cls[g][qualifies], r[g][qualifies])
    thresholds[np.isinf(thresholds)] = NEVER_EXIT
    return thresholds


def calibrate_cascade(
    confs: Sequence,
    preds: Sequence,
    labels,
    ref_precision,
    margin: float,
    num_classes: int,
    cascade_aware: bool,
) -> list[np.ndarray]:
    """CPM thresholds for every branch of a cascade at one margin.

    Args:
        confs: list over L branches of (N,) confidences at each branch's prediction.
        preds: list over L branches of (N,) predictions.
        labels: (N,) ground truth of the calibration (validation) set.
        ref_precision: (C,) backbone precision per class (``reference_precision``).
        margin: m in [0, 1].
        num_classes: C.
        cascade_aware: False calibrates every branch on all N samples (``full``);
            True calibrates branch 1 on all samples and branch l+1 only on the
            samples branches 1..l did not release at the thresholds just found
            for this margin (``cascade``).

    Returns:
        list of L (C,) float64 threshold vectors.
    """
    if len(confs) != len(preds) or not confs:
        raise CalexError(
            f"got {len(confs)} confidence arrays and {len(preds)} prediction arrays; "
            "need one of each per branch, at least one branch"
        )
    labels = np.asarray(labels)
    survivors = np.ones(labels.shape[0], dtype=bool)  # (N,) not released so far
    thresholds = []
    for conf, pred in zip(confs, preds, strict=True):
        conf, pred = np.asarray(conf), np.asarray(pred)
        if conf.shape != labels.shape or pred.shape != labels.shape:
            raise CalexError(
                f"a branch has {conf.shape[0]} samples but the labels have {labels.shape[0]}; "
                "use branch outputs of the same split"
            )
        keep = survivors if cascade_aware else slice(None)
        t = cpm_thresholds(conf[keep], pred[keep], labels[keep], ref_precision, margin, num_classes)
        thresholds.append(t)
        survivors &= ~(conf > t[pred])
    return thresholds
