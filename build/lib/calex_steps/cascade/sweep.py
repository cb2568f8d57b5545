"""The margin sweep: calibrate on the validation split, run the cascade on test (SPEC section 7).

The branches are trained once; each margin only recalibrates and re-evaluates.
numpy and pandas only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from calex_steps.calibration import calibrate_cascade, reference_precision
from calex_steps.cascade.simulate import flops_reduction, mean_cost, run_cascade
from calex_steps.data.splits import redraw_partition
from calex_steps.errors import CalexError

CALIBRATIONS = ("full", "cascade")


def margin_key(margin: float) -> str:
    """Key of a margin's thresholds in ``thresholds.npz``, e.g. 0.05 -> ``m0.05``."""
    return f"m{margin:g}"


def sweep_columns(num_branches: int) -> list[str]:
    """Columns of ``sweep.csv`` (docs/formats.md, section Sweep)."""
    fracs = [f"exit_frac_{b}" for b in range(1, num_branches + 1)]
    return [
        "margin",
        "accuracy",
        "fr",
        "backbone_accuracy",
        *fracs,
        "exit_frac_backbone",
        "mean_macs",
    ]


def _check_split(split: dict, name: str) -> int:
    """Check one split's arrays agree in length and branch count; return the branch count."""
    missing = [
        k for k in ("confs", "preds", "labels", "backbone_pred", "num_classes") if k not in split
    ]
    if missing:
        raise CalexError(f"the {name} split lacks {missing}")
    n = np.asarray(split["labels"]).shape[0]
    arrays = [*split["confs"], *split["preds"], split["backbone_pred"]]
    if len(split["confs"]) != len(split["preds"]) or not split["confs"]:
        raise CalexError(f"the {name} split needs one conf and one pred array per branch")
    if any(np.asarray(a).shape != (n,) for a in arrays):
        raise CalexError(f"the {name} split has arrays whose length differs from its {n} labels")
    return len(split["confs"])


def _summary_row(
    margin: float,
    exit_branch: np.ndarray,
    final_pred: np.ndarray,
    labels: np.ndarray,
    costs: np.ndarray,
    total_macs: int,
    backbone_acc: float,
) -> list[float]:
    """One row of the sweep table from the test split's exits (costs: (L+1,) per exit position)."""
    num_exits = costs.shape[0]
    fracs = np.bincount(exit_branch, minlength=num_exits) / exit_branch.shape[0]  # (L+1,)
    accuracy = float(np.mean(final_pred == labels))
    fr = flops_reduction(exit_branch, costs, total_macs)
    return [margin, accuracy, fr, backbone_acc, *fracs, mean_cost(exit_branch, costs)]


def sweep(
    val: dict,
    test: dict,
    margins: Sequence[float],
    calibration: str,
    stage_costs: Sequence[int],
    total_macs: int,
) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Calibrate on ``val`` and evaluate on ``test`` at every margin.

    Args:
        val, test: dicts with ``confs`` and ``preds`` (lists over L branches of (N,)
            arrays), ``labels`` (N,), ``backbone_pred`` (N,) and ``num_classes``.
        margins: CPM margins, distinct, each in [0, 1].
        calibration: ``full`` or ``cascade`` (SPEC section 7).
        stage_costs: (L+1,) MACs of a sample by exit position; the last is the
            cost of reaching the end (``cascade.cascade_cost``).
        total_macs: the whole backbone's MACs, the denominator of FR.

    Returns:
        table: one row per margin, columns ``sweep_columns(L)``.
        thresholds: ``margin_key(m)`` -> (L, C) thresholds.
        exits: ``margins`` (M,), ``exit_branch`` (M, N_test) with L = backbone,
            ``final_pred`` (M, N_test), ``labels`` (N_test,).
    """
    if calibration not in CALIBRATIONS:
        raise CalexError(f"calibration '{calibration}' is not one of {list(CALIBRATIONS)}")
    num_branches = _check_split(val, "val")
    if _check_split(test, "test") != num_branches:
        raise CalexError("val and test hold outputs of a different number of branches")
    try:
        margins = [float(m) for m in margins]
    except (TypeError, ValueError) as exc:
        raise CalexError(f"margins must be a list of numbers, got {margins!r}") from exc
    if not margins or len({margin_key(m) for m in margins}) != len(margins):
        raise CalexError(f"margins {margins} must be a non-empty list of distinct values")
    costs = np.asarray(stage_costs, dtype=np.float64)
    if costs.shape != (num_branches + 1,) or total_macs <= 0:
        raise CalexError(
            f"need {num_branches + 1} exit costs and a positive total, got {costs.shape[0]} "
            f"costs and total {total_macs}"
        )
    num_classes = int(val["num_classes"])
    ref = reference_precision(val["backbone_pred"], val["labels"], num_classes)
    labels = np.asarray(test["labels"], dtype=np.int64)
    backbone_acc = float(np.mean(np.asarray(test["backbone_pred"]) == labels))

    rows, thresholds, exit_rows, pred_rows = [], {}, [], []
    for m in margins:
        thr = calibrate_cascade(
            val["confs"],
            val["preds"],
            val["labels"],
            ref,
            m,
            num_classes,
            cascade_aware=calibration == "cascade",
        )
        exit_branch, final_pred = run_cascade(
            test["confs"], test["preds"], thr, test["backbone_pred"]
        )
        thresholds[margin_key(m)] = np.stack(thr)  # (L, C)
        exit_rows.append(exit_branch)
        pred_rows.append(final_pred)
        rows.append(
            _summary_row(m, exit_branch, final_pred, labels, costs, total_macs, backbone_acc)
        )
    exits = {
        "margins": np.asarray(margins, dtype=np.float64),
        "exit_branch": np.stack(exit_rows),
        "final_pred": np.stack(pred_rows),
        "labels": labels,
    }
    return pd.DataFrame(rows, columns=sweep_columns(num_branches)), thresholds, exits


def per_class_exits(exits: dict, num_branches: int, num_classes: int) -> pd.DataFrame:
    """Exit counts per (margin, exit position, ground-truth class), zeros included.

    Returns:
        columns ``margin, branch, class, count``; ``branch`` is 1..L for the
        branches and L+1 for the backbone; ``class`` is the sample's label.
    """
    slots = (num_branches + 1) * num_classes
    keys = exits["exit_branch"] * num_classes + exits["labels"][None, :]  # (M, N)
    counts = np.stack([np.bincount(k, minlength=slots) for k in keys])  # (M, (L+1)*C)
    margin_col = np.repeat(exits["margins"], slots)
    branch_col = np.tile(np.repeat(np.arange(1, num_branches + 2), num_classes), len(keys))
    class_col = np.tile(np.arange(num_classes), len(keys) * (num_branches + 1))
    return pd.DataFrame(
        {"margin": margin_col, "branch": branch_col, "class": class_col, "count": counts.ravel()}
    )


def repartition(val: dict, test: dict, split: int, seed: int) -> tuple[dict, dict, np.ndarray]:
    """The calibration and test parts of split ``split`` (``val``/``test`` as in ``sweep``).

    Split 0 returns the prepared partition unchanged; split k > 0 pools the two
    held-out parts and re-draws them (``data.splits.redraw_partition``). Also
    returns the test part's positions in the pool [val; test], which pair the
    same test images across recipes and seeds.
    """
    val_pos, test_pos = redraw_partition(val["labels"], test["labels"], split, seed)

    def pooled(key: str) -> np.ndarray:
        return np.concatenate([np.asarray(val[key]), np.asarray(test[key])])

    def pooled_list(key: str) -> list[np.ndarray]:
        return [
            np.concatenate([np.asarray(a), np.asarray(b)])
            for a, b in zip(val[key], test[key], strict=True)
        ]

    parts = []
    for pos in (val_pos, test_pos):
        part = {k: pooled(k)[pos] for k in ("labels", "backbone_pred")}
        part |= {k: [a[pos] for a in pooled_list(k)] for k in ("confs", "preds")}
        parts.append(part | {"num_classes": val["num_classes"]})
    return parts[0], parts[1], test_pos
