"""The label-free ``agree`` calibration target (docs/calibration.md).

Branch l may release class i at threshold t when its prediction equals the backbone's on
at least (1 - m) of exits(t): #{branch = backbone} >= (1 - m) * #exits(t). No label is
read, so the calibration set may be unlabelled images. numpy only.
"""

from __future__ import annotations

import numpy as np

from calex_steps.calibration.candidates import Target, branch_thresholds


def _agreements(pred, labels, backbone_pred) -> list[np.ndarray]:
    """Counted over exits(t): the branch predicts what the backbone predicts."""
    return [pred == backbone_pred]


def _agrees_often_enough(exits, counts, keep, ref) -> np.ndarray:
    """#{branch = backbone} >= (1 - m) * #exits(t)."""
    return counts[0] >= keep * exits


AGREE = Target("agree", False, _agreements, _agrees_often_enough)


def agree_thresholds(
    conf, pred, labels, backbone_pred, margin: float, num_classes: int
) -> np.ndarray:
    """``agree`` thresholds of one branch on one calibration set.

    The signature of ``cpm_thresholds``; ``labels`` is ignored (None is fine) and the
    backbone's per-sample prediction (N,) stands in place of the reference precision.

    Returns:
        (C,) float64 thresholds.
    """
    return branch_thresholds(
        AGREE, conf, pred, labels, margin, num_classes, backbone_pred=backbone_pred
    )
