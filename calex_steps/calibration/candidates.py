"""Candidate thresholds of one branch, shared by every calibration target (docs/calibration.md).

For class i the candidates are the calibration samples the branch predicts as i. For a
threshold t, exits(t) are the candidates whose exit signal exceeds t strictly. The
candidate thresholds are the observed signal values and ``top``, the top of the signal's
range (1.0 for a probability; a threshold there never releases anything). A target picks,
per class, the smallest candidate whose exits(t) satisfy it, else ``top``.

One lexsort by (class, -signal) serves every margin and every calibration subset: the
counts over exits(t) of a tie group (equal class and signal) are exclusive cumulative
sums read at the group's first position, minus those at its class's first position.
Rows of a (K, N) mask select K calibration subsets at once (one per margin for cascade
calibration). numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from calex_steps.errors import CalexError


@dataclass(frozen=True)
class Target:
    """A calibration target: what it counts over exits(t) and when those counts qualify.

    ``quantities(pred, labels, backbone_pred)`` gives per-sample 0/1 arrays; the engine
    counts each of them over exits(t). ``qualifies(exits, counts, keep, ref)`` gets
    the number of exits (K, G), those counts (a list of (K, G)), ``keep`` = 1 - margin
    ((K, 1) or scalar) and ``ref`` (G,), the per-class reference of each group's class
    (NaN where a target has none), and returns the (K, G) mask of qualifying groups.
    """

    name: str
    needs_labels: bool
    quantities: Callable[..., list[np.ndarray]]
    qualifies: Callable[..., np.ndarray]


def class_vector(values, n: int, name: str) -> np.ndarray:
    """Return ``values`` as an int64 vector of length ``n`` (integer dtype required)."""
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise CalexError(f"{name} has shape {arr.shape}, expected ({n},) like the confidences")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise CalexError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def check_range(classes: np.ndarray, num_classes: int, name: str) -> None:
    """Raise if any class index lies outside [0, num_classes)."""
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        raise CalexError(
            f"{name} holds class indices outside [0, {num_classes}); "
            "check num_classes against the files that produced the predictions"
        )


def check_margin(margin: float) -> float:
    """A margin as a float in [0, 1]."""
    margin = float(margin)
    if not 0.0 <= margin <= 1.0:
        raise CalexError(f"margin {margin} is outside [0, 1]; fix the sweep margins")
    return margin


class Candidates:
    """The sorted candidates of one branch on one calibration set (every class at once)."""

    def __init__(self, signal, pred, num_classes: int, top: float = 1.0):
        """signal: (N,) exit signal at the prediction; pred: (N,) int; top: never-exit value."""
        signal = np.asarray(signal)
        if signal.ndim != 1:
            raise CalexError(f"conf must be 1-D, got shape {signal.shape}")
        n = signal.shape[0]
        signal = signal.astype(np.float64)  # exact for float32 input
        if not np.all(np.isfinite(signal)):
            raise CalexError("conf holds NaN or infinite confidences; check the branch outputs")
        pred = class_vector(pred, n, "pred")
        check_range(pred, num_classes, "pred")
        self.n, self.num_classes, self.top = n, num_classes, float(top)
        # Real samples followed by one virtual candidate per class at the top value.
        r = np.concatenate([signal, np.full(num_classes, self.top)])  # (N+C,)
        cls = np.concatenate([pred, np.arange(num_classes)])
        self.order = np.lexsort((-r, cls))  # by class, then signal descending
        r, cls = r[self.order], cls[self.order]
        new_class = np.ones(r.shape[0], dtype=bool)
        new_class[1:] = cls[1:] != cls[:-1]
        new_group = new_class.copy()
        new_group[1:] |= r[1:] != r[:-1]  # a tie group = equal (class, signal)
        self.start = np.flatnonzero(new_group)  # (G,) first position of each group
        self.last = np.r_[self.start[1:], r.shape[0]] - 1  # (G,) last position
        class_first = np.maximum.accumulate(np.where(new_class, np.arange(r.shape[0]), 0))
        self.class_first = class_first[self.start]  # (G,)
        self.value = r[self.start]  # (G,) the candidate threshold of each group
        self.group_class = cls[self.start]  # (G,)
        virtual = self.order >= n
        self.has_virtual = np.add.reduceat(virtual, self.start) > 0  # (G,)
        self.class_groups = np.flatnonzero(new_class[self.start])  # (C,) first group per class

    def _sorted(self, values: np.ndarray) -> np.ndarray:
        """(K, N) per-sample values -> (K, N+C) in sorted order, zero at virtual candidates."""
        padded = np.zeros((values.shape[0], self.n + self.num_classes), dtype=np.int32)
        padded[:, : self.n] = values
        return padded[:, self.order]

    def above(self, values: np.ndarray) -> np.ndarray:
        """(K, N) 0/1 values -> (K, G) their sums over exits(t) of each group's value t."""
        v = self._sorted(values)
        before = np.cumsum(v, axis=1, dtype=np.int32) - v  # exclusive
        return before[:, self.start] - before[:, self.class_first]

    def inside(self, mask: np.ndarray) -> np.ndarray:
        """(K, N) 0/1 mask -> (K, G) number of masked samples inside each tie group."""
        v = self._sorted(mask)
        total = np.cumsum(v, axis=1, dtype=np.int32)
        return total[:, self.last] - (total[:, self.start] - v[:, self.start])

    def smallest(self, qualifies: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """Per row and class the smallest qualifying candidate, else ``top``.

        Args:
            qualifies: (K, G) bool, the target's verdict per tie group.
            observed: (K, G) bool, whether the group's value is observed in that row's
                calibration subset (the top value is always a candidate).

        Returns:
            (K, C) float64 thresholds.
        """
        ok = qualifies & (observed | self.has_virtual)
        values = np.where(ok, self.value, np.inf)  # (K, G)
        best = np.minimum.reduceat(values, self.class_groups, axis=1)  # (K, C)
        return np.where(np.isinf(best), self.top, best)

    def thresholds(
        self, target: Target, mask, pred, labels, backbone_pred, keep, ref
    ) -> np.ndarray:
        """(K, C) thresholds of ``target`` on the K calibration subsets of ``mask`` (K, N).

        ``mask`` may hold counts instead of 0/1: a sample counted that many times (a
        bootstrap resample of the calibration set).
        """
        mask = np.asarray(mask, dtype=np.int32)
        counts = [self.above(mask * q) for q in target.quantities(pred, labels, backbone_pred)]
        exits = self.above(mask)
        ref_g = (
            np.full(self.value.shape, np.nan) if ref is None else np.asarray(ref)[self.group_class]
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = (exits > 0) & target.qualifies(exits, counts, keep, ref_g)
        return self.smallest(ok, self.inside(mask) > 0)


def branch_thresholds(
    target: Target,
    conf,
    pred,
    labels,
    margin: float,
    num_classes: int,
    *,
    ref_precision=None,
    backbone_pred=None,
) -> np.ndarray:
    """(C,) thresholds of one branch on one calibration set at one margin.

    ``ref_precision`` (C,) is the per-class reference of ``cpm``; ``backbone_pred``
    (N,) the backbone's prediction per sample, for the targets that compare with it.
    """
    cand = Candidates(conf, pred, num_classes)
    pred = class_vector(pred, cand.n, "pred")
    if labels is not None:
        labels = class_vector(labels, cand.n, "labels")
    elif target.needs_labels:
        raise CalexError(f"calibration target '{target.name}' needs the calibration labels")
    if backbone_pred is not None:
        backbone_pred = class_vector(backbone_pred, cand.n, "backbone_pred")
    if ref_precision is not None:
        ref_precision = np.asarray(ref_precision, dtype=np.float64)
        if ref_precision.shape != (num_classes,):
            raise CalexError(
                f"ref_precision has shape {ref_precision.shape}, expected ({num_classes},)"
            )
    keep = 1.0 - check_margin(margin)
    ones = np.ones((1, cand.n), dtype=np.int32)
    return cand.thresholds(target, ones, pred, labels, backbone_pred, keep, ref_precision)[0]
