"""Calibration targets by name, and thresholds for a whole cascade at many margins at once.

``cpm`` (docs/method.md#calibration), ``matched`` and ``agree`` (docs/calibration.md) share the
candidates, ties and infeasibility rules of ``calibration.candidates``. ``full``
calibration uses the whole calibration set for every branch; ``cascade`` calibration
uses, for branch l+1, the samples branches 1..l did not release at the same margin.
numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calex_steps.calibration.agree import AGREE
from calex_steps.calibration.candidates import Candidates, Target, check_margin, class_vector
from calex_steps.calibration.cpm import CPM, reference_precision
from calex_steps.calibration.matched import MATCHED
from calex_steps.errors import CalexError

TARGETS = {t.name: t for t in (CPM, MATCHED, AGREE)}
CELLS_PER_BLOCK = 4_000_000  # margins x samples handled at once (bounds the memory)


def get_target(name: str) -> Target:
    """The calibration target called ``name``."""
    if name not in TARGETS:
        raise CalexError(f"calibration target '{name}' is not one of {list(TARGETS)}")
    return TARGETS[name]


def _check_branches(confs: Sequence, preds: Sequence, n: int) -> None:
    if len(confs) != len(preds) or not confs:
        raise CalexError(
            f"got {len(confs)} confidence arrays and {len(preds)} prediction arrays; "
            "need one of each per branch, at least one branch"
        )
    for conf, pred in zip(confs, preds, strict=True):
        if np.shape(conf) != (n,) or np.shape(pred) != (n,):
            raise CalexError(
                f"a branch has {np.shape(conf)[0]} samples but the labels have {n}; "
                "use branch outputs of the same split"
            )


def _check_weights(weights, n: int) -> np.ndarray:
    """(R, N) non-negative integer sample counts as int32."""
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[1] != n or not np.issubdtype(w.dtype, np.integer) or (w < 0).any():
        raise CalexError(
            f"calibration weights must be (resamples, {n}) non-negative integer counts, "
            f"got {w.dtype} {w.shape}"
        )
    return w.astype(np.int32, copy=False)


def calibrate_margins(
    confs: Sequence,
    preds: Sequence,
    margins: Sequence[float],
    target: Target,
    num_classes: int,
    *,
    cascade_aware: bool,
    labels=None,
    backbone_pred=None,
    ref_precision=None,
    top: float = 1.0,
    weights=None,
) -> np.ndarray:
    """Thresholds of every branch at every margin.

    Args:
        confs: list over L branches of (N,) exit signals at each branch's prediction.
        preds: list over L branches of (N,) predictions.
        margins: M margins in [0, 1].
        target: a ``Target`` (``get_target(name)``).
        num_classes: C.
        cascade_aware: calibrate branch l+1 on the samples 1..l did not release.
        labels: (N,) ground truth, or None for a target that reads none.
        backbone_pred: (N,) the backbone's predictions (``matched``, ``agree``; and
            ``cpm`` when ``ref_precision`` is not given).
        ref_precision: (C,) CPM's P̂; computed from ``backbone_pred`` and ``labels``
            (on each reweighted set) when None.
        top: the top of the signal's range, the never-exit threshold.
        weights: (R, N) integer counts: calibrate on R reweighted calibration sets at
            once, sample j counted ``weights[r, j]`` times in set r (bootstrap resamples
            of the calibration set).

    Returns:
        (M, L, C) float64 thresholds; (R, M, L, C) with ``weights``.
    """
    n = np.shape(confs[0])[0] if len(confs) else 0
    n = np.shape(labels)[0] if labels is not None else n
    _check_branches(confs, preds, n)
    if labels is None and target.needs_labels:
        raise CalexError(
            f"calibration target '{target.name}' compares with ground truth, and the "
            "calibration split has no labels; use calibration_target: agree"
        )
    labels = None if labels is None else class_vector(labels, n, "labels")
    if backbone_pred is not None:
        backbone_pred = class_vector(backbone_pred, n, "backbone_pred")
    w = None if weights is None else _check_weights(weights, n)
    if target is CPM and ref_precision is None:
        ref_precision = reference_precision(backbone_pred, labels, num_classes, w)
    ref = None if ref_precision is None else np.asarray(ref_precision, dtype=np.float64)
    keep = 1.0 - np.array([check_margin(m) for m in margins], dtype=np.float64)[:, None]
    cands = [Candidates(c, p, num_classes, top) for c, p in zip(confs, preds, strict=True)]
    preds = [class_vector(p, n, "pred") for p in preds]
    signals = [np.asarray(c, dtype=np.float64) for c in confs]
    block = max(1, CELLS_PER_BLOCK // max(n, 1))
    sets = 1 if w is None else w.shape[0]
    out = np.empty((sets, keep.shape[0], len(cands), num_classes))
    for r in range(sets):  # each reweighted set as the unweighted one, its counts weighted
        ref_r = ref if ref is None or ref.ndim == 1 else ref[r]
        for lo in range(0, keep.shape[0], block):
            rows = keep[lo : lo + block]
            calibrating = np.ones((rows.shape[0] if cascade_aware else 1, n), dtype=np.int32)
            if w is not None:
                calibrating *= w[r]
            for b, cand in enumerate(cands):
                thr = cand.thresholds(target, calibrating, preds[b], labels, backbone_pred,
                                      rows, ref_r)  # fmt: skip
                out[r, lo : lo + block, b] = thr
                if cascade_aware:
                    calibrating *= ~(signals[b][None, :] > thr[:, preds[b]])
    return out[0] if w is None else out


def calibrate_cascade(
    confs: Sequence,
    preds: Sequence,
    labels,
    ref_precision,
    margin: float,
    num_classes: int,
    cascade_aware: bool,
) -> list[np.ndarray]:
    """CPM thresholds for every branch of a cascade at one margin (public API, docs/api.md).

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
    thr = calibrate_margins(
        confs,
        preds,
        [margin],
        CPM,
        num_classes,
        cascade_aware=cascade_aware,
        labels=labels,
        ref_precision=ref_precision,
    )
    return list(thr[0])
