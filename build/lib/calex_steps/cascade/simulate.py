"""The cascade simulator every evaluation shares (SPEC section 7), and its cost (section 9).

A sample walks the branches in order; the first branch whose confidence R
exceeds its threshold for the predicted class releases it with that
prediction; a sample no branch releases gets the backbone's prediction.
Costs are MACs counted by ``calex_steps.flops``; this module stays numpy-only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calex_steps.errors import CalexError


def run_cascade(
    confs: Sequence, preds: Sequence, thresholds: Sequence, backbone_pred
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate the cascade on precomputed branch outputs.

    Args:
        confs: list over L branches of (N,) confidences at each branch's prediction.
        preds: list over L branches of (N,) int predictions.
        thresholds: list over L branches of (C,) thresholds; branch l releases
            sample j when confs[l][j] > thresholds[l][preds[l][j]] (strictly).
        backbone_pred: (N,) int, the prediction of a sample no branch releases.

    Returns:
        exit_branch: (N,) int64, 0..L-1 for the releasing branch, L for the backbone.
        final_pred: (N,) int64, the prediction the cascade returns.
    """
    num_branches = len(confs)
    if not (len(preds) == len(thresholds) == num_branches):
        raise CalexError(
            f"got {len(confs)} confidence, {len(preds)} prediction and {len(thresholds)} "
            "threshold arrays; need one of each per branch"
        )
    final_pred = np.array(backbone_pred, dtype=np.int64)  # (N,) copy
    exit_branch = np.full(final_pred.shape, num_branches, dtype=np.int64)
    for branch, (conf, pred, thr) in enumerate(zip(confs, preds, thresholds, strict=True)):
        conf, pred, thr = np.asarray(conf), np.asarray(pred, dtype=np.int64), np.asarray(thr)
        if conf.shape != final_pred.shape or pred.shape != final_pred.shape:
            raise CalexError(
                f"branch {branch + 1} has {conf.shape[0]} samples but the backbone has "
                f"{final_pred.shape[0]}; use outputs of the same split"
            )
        if pred.size and (pred.min() < 0 or pred.max() >= thr.shape[0]):
            raise CalexError(
                f"branch {branch + 1} predicts a class outside its {thr.shape[0]} thresholds"
            )
        # Still in the cascade and confident enough for the predicted class.
        released = (exit_branch == num_branches) & (conf > thr[pred])
        exit_branch[released] = branch
        final_pred[released] = pred[released]
    return exit_branch, final_pred


def cascade_cost(
    stage_cum_macs: Sequence[int], head_macs: Sequence[int], total_macs: int
) -> list[int]:
    """MACs paid by a sample per exit: entry l (0-based) = backbone through attach
    point l + heads 0..l; the last entry (index L) = ``total_macs`` + all L heads."""
    if len(stage_cum_macs) != len(head_macs) or not head_macs:
        raise CalexError(
            f"cascade_cost needs one head per attach point, got {len(stage_cum_macs)} "
            f"stage costs and {len(head_macs)} head costs"
        )
    heads_so_far = np.cumsum(np.asarray(head_macs, dtype=np.int64))
    costs = [int(s) + int(h) for s, h in zip(stage_cum_macs, heads_so_far, strict=True)]
    return [*costs, int(total_macs) + int(heads_so_far[-1])]


def mean_cost(exit_branch: np.ndarray, costs: Sequence[int]) -> float:
    """Mean MACs per sample; ``exit_branch`` holds 0..L-1 for a branch and L for the
    backbone, and ``costs`` is the output of ``cascade_cost``."""
    exits = np.asarray(exit_branch, dtype=np.int64)
    if exits.size == 0:
        raise CalexError("the cost of a cascade needs at least one sample")
    if exits.min() < 0 or exits.max() >= len(costs):
        raise CalexError(
            f"exit_branch values must lie in 0..{len(costs) - 1}, got {exits.min()}..{exits.max()}"
        )
    return float(np.asarray(costs, dtype=np.float64)[exits].mean())


def flops_reduction(exit_branch: np.ndarray, costs: Sequence[int], total_macs: int) -> float:
    """FR = 1 - mean cost / ``total_macs`` (SPEC section 9)."""
    return 1.0 - mean_cost(exit_branch, costs) / total_macs
