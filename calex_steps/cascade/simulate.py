"""The cascade simulator every evaluation shares and its cost (docs/method.md#calibration, #flops).

A sample walks the branches in order; the first branch whose confidence R
exceeds its threshold for the predicted class releases it with that
prediction; a sample no branch releases gets the backbone's prediction.
Costs are MACs counted by ``calex_steps.flops``, and milliseconds predicted from the
measured segment times (``segment_times``); this module stays numpy-only.
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
        confs: list over L branches of (N,) exit signals at each branch's prediction.
        preds: list over L branches of (N,) int predictions.
        thresholds: list over L branches of (C,) thresholds, or of (M, C) for M
            operating points at once; branch l releases sample j when
            confs[l][j] > thresholds[l][..., preds[l][j]] (strictly).
        backbone_pred: (N,) int, the prediction of a sample no branch releases.

    Returns:
        exit_branch: (N,) int64, or (M, N): 0..L-1 for the releasing branch, L for the backbone.
        final_pred: (N,) int64, or (M, N): the prediction the cascade returns.
    """
    num_branches = len(confs)
    if not (len(preds) == len(thresholds) == num_branches):
        raise CalexError(
            f"got {len(confs)} confidence, {len(preds)} prediction and {len(thresholds)} "
            "threshold arrays; need one of each per branch"
        )
    backbone = np.asarray(backbone_pred, dtype=np.int64)  # (N,)
    lead = np.shape(thresholds[0])[:-1] if num_branches else ()  # () or (M,)
    final_pred = np.array(np.broadcast_to(backbone, lead + backbone.shape))
    exit_branch = np.full(final_pred.shape, num_branches, dtype=np.int64)
    for branch, (conf, pred, thr) in enumerate(zip(confs, preds, thresholds, strict=True)):
        conf, pred, thr = np.asarray(conf), np.asarray(pred, dtype=np.int64), np.asarray(thr)
        if conf.shape != backbone.shape or pred.shape != backbone.shape:
            raise CalexError(
                f"branch {branch + 1} has {conf.shape[0]} samples but the backbone has "
                f"{backbone.shape[0]}; use outputs of the same split"
            )
        if thr.shape[:-1] != lead:
            raise CalexError(f"branch {branch + 1} has thresholds of shape {thr.shape}")
        if pred.size and (pred.min() < 0 or pred.max() >= thr.shape[-1]):
            raise CalexError(
                f"branch {branch + 1} predicts a class outside its {thr.shape[-1]} thresholds"
            )
        # Still in the cascade and confident enough for the predicted class.
        released = (exit_branch == num_branches) & (conf > thr[..., pred])
        exit_branch = np.where(released, branch, exit_branch)
        final_pred = np.where(released, pred, final_pred)
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
    """FR = 1 - mean cost / ``total_macs`` (docs/method.md#flops)."""
    return 1.0 - mean_cost(exit_branch, costs) / total_macs


def segment_times(
    segments: dict, exits: Sequence[str], batch_size: int, head: str
) -> tuple[np.ndarray, float]:
    """Predicted per-sample milliseconds by exit position, from ``segments.json``.

    The segments were measured between consecutive attach points of the feature cache; a
    recipe's exits are some of them. A sample leaving at exit l (0-based) pays the segments
    up to exit l's attach point and heads 0..l; one reaching the end pays every segment, the
    tail and every head (docs/formats.md).

    Args:
        segments: the parsed ``results/{d}/{b}/latency/segments.json``.
        exits: the attach points of the recipe's exits, in forward order (each one of the
            file's ``attach_points``).
        batch_size: which measured batch size to read (``latency.lr_batch_size``).
        head: the recipe's head kind (``augmented``, ``sdn``, ``basic+cascade``, ...).

    Returns:
        times_ms: (L+1,) float64; backbone_ms: the plain backbone's time per sample.
    """
    where = "segments.json"
    measured = list(segments.get("attach_points", []))
    missing = [e for e in exits if e not in measured]
    if missing or not exits:
        raise CalexError(
            f"{where} was measured at attach points {measured}, not at the exits "
            f"{list(exits)}; rerun measure_segments"
        )
    per_batch = segments.get("per_batch", {})
    if str(batch_size) not in per_batch:
        raise CalexError(
            f"{where} has no batch size {batch_size} (measured: {sorted(per_batch, key=int)}); "
            "set latency.lr_batch_size to one of latency.batch_sizes"
        )
    entry = per_batch[str(batch_size)]
    heads = entry.get("heads_ms", {})
    if head not in heads:
        raise CalexError(f"{where} has no head times for '{head}' (has {sorted(heads)})")
    try:
        seg = np.asarray(entry["segments_ms"], dtype=np.float64)
        head_ms = np.asarray(heads[head], dtype=np.float64)
        tail, backbone = float(entry["tail_ms"]), float(entry["backbone_ms"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CalexError(f"{where} batch {batch_size} is malformed ({exc!r})") from exc
    if seg.shape != (len(measured),) or head_ms.shape != seg.shape:
        raise CalexError(f"{where} batch {batch_size} needs {len(measured)} segment and head times")
    if not (np.all(np.isfinite(seg)) and np.all(np.isfinite(head_ms)) and backbone > 0):
        raise CalexError(f"{where} batch {batch_size} holds non-finite or zero times")
    at = np.asarray([measured.index(e) for e in exits])
    exit_ms = np.cumsum(seg)[at] + np.cumsum(head_ms[at])
    return np.append(exit_ms, seg.sum() + tail + head_ms[at].sum()), backbone
