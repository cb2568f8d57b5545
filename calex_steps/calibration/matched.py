"""The ``matched`` calibration target (docs/calibration.md).

Branch l may release class i at threshold t when, on exits(t), the branch is right at
least (1 - m) times as often as the backbone is on those same samples, both against
ground truth: #{branch right} >= (1 - m) * #{backbone right}. CPM compares with the
backbone's precision over the whole class instead, which the easy samples a branch
releases exceed by far. numpy only.
"""

from __future__ import annotations

import numpy as np

from calex_steps.calibration.candidates import Target, branch_thresholds


def _hits_and_backbone_hits(pred, labels, backbone_pred) -> list[np.ndarray]:
    """Counted over exits(t): the branch is right, the backbone is right."""
    return [pred == labels, backbone_pred == labels]


def _as_good_as_the_backbone(exits, counts, keep, ref) -> np.ndarray:
    """#{branch right} >= (1 - m) * #{backbone right} on the same exits."""
    return counts[0] >= keep * counts[1]


MATCHED = Target("matched", True, _hits_and_backbone_hits, _as_good_as_the_backbone)


def matched_thresholds(
    conf, pred, labels, backbone_pred, margin: float, num_classes: int
) -> np.ndarray:
    """``matched`` thresholds of one branch on one calibration set.

    The signature of ``cpm_thresholds``, with the backbone's per-sample prediction
    (N,) in place of the per-class reference precision. Candidates, ties and
    infeasibility as CPM: the smallest observed signal (or 1.0) whose non-empty
    exits(t) satisfy the rule, else 1.0.

    Returns:
        (C,) float64 thresholds.
    """
    return branch_thresholds(
        MATCHED, conf, pred, labels, margin, num_classes, backbone_pred=backbone_pred
    )
