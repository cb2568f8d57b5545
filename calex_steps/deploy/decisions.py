"""Does a deployed cascade decide as the simulator did? (numpy only; docs/deploy.md)

The sweep simulated every test image from the feature cache (``exits.npz``); a deployed
cascade recomputes the same numbers with other kernels, so a signal may move by float
rounding and an image whose signal lies that close to its threshold may leave at
another exit. ``compare_decisions`` counts the images whose exit or prediction differs
and sorts them: *within tolerance* when, at some branch both runs reached, the
simulated signal lies within ``tolerance`` of the threshold of that branch's predicted
class; *beyond* otherwise (the check fails on any).
"""

from __future__ import annotations

import numpy as np

from calex_steps.cascade.sweep import margin_key
from calex_steps.errors import CalexError

EXAMPLES = 10  # differing images listed by position in the report


def margin_row(exits: dict, margin: float) -> int:
    """The row of ``exits`` (``margins`` (M,)) that holds ``margin``."""
    keys = [margin_key(float(m)) for m in exits["margins"]]
    if margin_key(margin) not in keys:
        raise CalexError(f"exits.npz has no margin {margin:g}; export a margin of the sweep")
    return keys.index(margin_key(margin))


def exit_fractions(exit_branch: np.ndarray, count: int) -> list[float]:
    """Fraction of images leaving at each of the ``count`` branches and the backbone."""
    exits = np.asarray(exit_branch, dtype=np.int64)
    return (np.bincount(exits, minlength=count + 1) / max(len(exits), 1)).tolist()


def compare_decisions(pred, exit_branch, exits: dict, margin: float, thresholds,
                      tolerance: float) -> dict:  # fmt: skip
    """Compare a deployed cascade's (pred, exit_branch) on the test images with ``exits``.

    Args:
        pred, exit_branch: (N,) answers of the deployed cascade, test images in order.
        exits: ``exits.npz`` of the sweep (``margins``, ``exit_branch``, ``final_pred``,
            ``signal`` and ``branch_pred`` (L, N), ``labels``).
        margin: the exported margin; thresholds: its (L, C) thresholds.
        tolerance: how close to its threshold a signal may flip.

    Returns:
        counts (``differing``, ``within_tolerance``, ``beyond_tolerance``), accuracies and
        exit fractions of both, and the first differing images beyond the tolerance.
    """
    row = margin_row(exits, margin)
    sim_exit = np.asarray(exits["exit_branch"][row], dtype=np.int64)
    sim_pred = np.asarray(exits["final_pred"][row], dtype=np.int64)
    pred, exit_branch = np.asarray(pred, np.int64), np.asarray(exit_branch, np.int64)
    if pred.shape != sim_pred.shape or exit_branch.shape != sim_exit.shape:
        raise CalexError(f"{len(pred)} answers for {len(sim_pred)} simulated test images; "
                         "run the deployed cascade on the whole test split in order")  # fmt: skip
    signal = np.asarray(exits["signal"], dtype=np.float64)  # (L, N)
    branch_pred = np.asarray(exits["branch_pred"], dtype=np.int64)
    thr = np.asarray(thresholds, dtype=np.float64)
    count = signal.shape[0]
    gap = np.abs(signal - np.take_along_axis(thr, branch_pred, axis=1))  # (L, N)
    reached = np.arange(count)[:, None] <= np.maximum(sim_exit, exit_branch)[None, :]
    near = np.any(reached & (gap <= tolerance), axis=0)
    differ = (pred != sim_pred) | (exit_branch != sim_exit)
    beyond = np.flatnonzero(differ & ~near)
    labels = np.asarray(exits["labels"], dtype=np.int64)
    return {
        "margin": float(margin),
        "images": int(len(pred)),
        "tolerance": float(tolerance),
        "differing": int(differ.sum()),
        "within_tolerance": int((differ & near).sum()),
        "beyond_tolerance": int(len(beyond)),
        "accuracy": float(np.mean(pred == labels)),
        "simulated_accuracy": float(np.mean(sim_pred == labels)),
        "exit_fractions": exit_fractions(exit_branch, count),
        "simulated_exit_fractions": exit_fractions(sim_exit, count),
        "beyond_examples": [
            {
                "image": int(j),
                "exit": int(exit_branch[j]),
                "simulated_exit": int(sim_exit[j]),
                "pred": int(pred[j]),
                "simulated_pred": int(sim_pred[j]),
            }
            for j in beyond[:EXAMPLES]
        ],  # fmt: skip
    }
