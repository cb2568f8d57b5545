"""The margin sweep: calibrate on one part, run the cascade on test (docs/method.md#calibration).

The branches are trained once; each margin only recalibrates and re-evaluates. An exit
rule (``ExitRule``) names the exit signal, per-class or global thresholds, the
calibration target and set, and temperature scaling (docs/calibration.md). Every margin
of the frontier grid (the paper's margins joined with a dense log-spaced grid) is
calibrated and simulated at once. numpy, scipy and pandas only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from calex_steps.calibration import calibrate_margins, get_target
from calex_steps.calibration.temperature import fit_temperature
from calex_steps.cascade.signals import FILE_SIGNALS, SIGNALS, logit_signals, signal_top
from calex_steps.cascade.simulate import run_cascade
from calex_steps.data.splits import pool_resamples, repartition
from calex_steps.errors import CalexError

CALIBRATIONS = ("full", "cascade")
THRESHOLD_RULES = ("per_class", "global")
SIGNIFICANT = 3  # digits kept of a dense-grid margin (its CSV text and npz key stay exact)
CELLS_PER_CHUNK = 4_000_000  # (resample, margin, test sample) cells simulated at once


def margin_key(margin: float) -> str:
    """Key of a margin's thresholds in ``thresholds.npz``, e.g. 0.05 -> ``m0.05``."""
    return f"m{margin:g}"


def margin_grid(margins: Sequence[float], dense: dict | None = None) -> list[float]:
    """The frontier grid: ``margins`` joined with ``dense`` (``low``, ``high``, ``count``:
    ``count`` log-spaced margins from ``low`` to ``high``, 3 significant digits), ascending."""
    try:
        grid = [float(m) for m in margins]
    except (TypeError, ValueError) as exc:
        raise CalexError(f"margins must be a list of numbers, got {margins!r}") from exc
    if not grid or len({margin_key(m) for m in grid}) != len(grid):
        raise CalexError(f"margins {grid} must be a non-empty list of distinct values")
    if dense and int(dense.get("count", 0)) > 0:
        low, high, count = float(dense["low"]), float(dense["high"]), int(dense["count"])
        if not 0 < low <= high <= 1:
            raise CalexError(f"sweep.dense needs 0 < low <= high <= 1, got {low} and {high}")
        grid += [float(f"{m:.{SIGNIFICANT}g}") for m in np.geomspace(low, high, count)]
    unique = {margin_key(m): m for m in grid}
    return sorted(unique.values())


def sweep_columns(num_branches: int) -> list[str]:
    """Columns of ``sweep.csv`` and ``frontier.csv`` (docs/formats.md, section Sweep)."""
    fracs = [f"exit_frac_{b}" for b in range(1, num_branches + 1)]
    return [
        "margin",
        "accuracy",
        "fr",
        "lr",
        "backbone_accuracy",
        *fracs,
        "exit_frac_backbone",
        "mean_macs",
        "mean_ms",
    ]


@dataclass(frozen=True)
class ExitRule:
    """How a recipe's cascade decides to release a sample (docs/calibration.md)."""

    signal: str = "branch"
    thresholds: str = "per_class"
    target: str = "cpm"
    calibration: str = "full"
    temperature_scaling: bool = False

    def __post_init__(self):
        for value, allowed, what in (
            (self.signal, SIGNALS, "exit_signal"),
            (self.thresholds, THRESHOLD_RULES, "thresholds"),
            (self.calibration, CALIBRATIONS, "calibration"),
        ):
            if value not in allowed:
                raise CalexError(f"{what} '{value}' is not one of {list(allowed)}")
        get_target(self.target)
        if self.temperature_scaling and self.signal in (*FILE_SIGNALS, "patience"):
            raise CalexError(
                f"temperature_scaling rescales class logits; exit_signal '{self.signal}' "
                "does not read them"
            )

    @property
    def needs_labels(self) -> bool:
        """Whether calibrating this rule reads the calibration labels."""
        per_class = self.thresholds == "per_class" and get_target(self.target).needs_labels
        return per_class or self.temperature_scaling


@dataclass(frozen=True)
class ExitCosts:
    """What a sample costs by exit position: MACs, and predicted milliseconds if measured."""

    macs: Sequence[float]  # (L+1,) cascade.simulate.cascade_cost
    total_macs: float  # the whole backbone's MACs, the denominator of FR
    times_ms: Sequence[float] | None = None  # (L+1,) cascade.simulate.segment_times
    backbone_ms: float = float("nan")  # the plain backbone's time, the denominator of LR


def _check_split(split: dict, name: str, logits: bool) -> int:
    """Check one split's arrays agree in length and branch count; return the branch count."""
    needed = ("confs", "preds", "backbone_pred", "num_classes") + (("logits",) if logits else ())
    missing = [k for k in (*needed, "labels") if k not in split]
    if missing:
        raise CalexError(f"the {name} split lacks {missing}")
    n = np.asarray(split["backbone_pred"]).shape[0]
    if len(split["confs"]) != len(split["preds"]) or not split["confs"]:
        raise CalexError(f"the {name} split needs one conf and one pred array per branch")
    arrays = [*split["confs"], *split["preds"]]
    arrays += [] if split["labels"] is None else [split["labels"]]
    if any(np.asarray(a).shape != (n,) for a in arrays):
        raise CalexError(f"the {name} split has arrays whose length differs from its {n} samples")
    if logits and (
        len(split["logits"]) != len(split["confs"])
        or any(np.shape(z)[0] != n for z in split["logits"])
    ):
        raise CalexError(f"the {name} split needs one (N, C) logits array per branch")
    return len(split["confs"])


def exit_signals(val: dict, test: dict, rule: ExitRule) -> tuple[dict, dict, np.ndarray | None]:
    """Both splits with ``confs``/``preds`` set to the rule's signal and prediction.

    For a signal computed from logits, with temperature scaling, one T per branch is
    fitted on ``val`` first. Returns (val, test, temperatures or None).
    """
    if rule.signal in FILE_SIGNALS:
        return val, test, None
    temps = None
    if rule.temperature_scaling:
        temps = np.array([fit_temperature(z, val["labels"]) for z in val["logits"]])
    out = []
    for split in (val, test):
        confs, preds = logit_signals(rule.signal, split["logits"], temps)
        out.append({**split, "confs": confs, "preds": preds})
    return out[0], out[1], temps


def rule_thresholds(
    val: dict, margins: Sequence[float], rule: ExitRule, weights=None
) -> np.ndarray:
    """(M, L, C) thresholds of every margin: calibrated per class, or one global value.

    A global rule thresholds every branch and class at t = (1 - m) * top, where top is
    the top of the signal's range (1; L for ``patience``). With ``weights`` (R, N)
    integer counts, calibrate on R reweighted calibration parts at once: (R, M, L, C).
    """
    num_branches, num_classes = len(val["confs"]), int(val["num_classes"])
    top = signal_top(rule.signal, num_branches)
    m = np.asarray(margins, dtype=np.float64)
    if rule.thresholds == "global":
        values = (1.0 - m) * top
        shape = (len(m), num_branches, num_classes)
        out = np.broadcast_to(values[:, None, None], shape)
        return out.copy() if weights is None else np.broadcast_to(out, (len(weights), *shape))
    if rule.needs_labels and val["labels"] is None:
        raise CalexError(
            f"calibration target '{rule.target}' needs the calibration labels, which the "
            "features file lacks; use calibration_target: agree, or restore the labels"
        )
    return calibrate_margins(
        val["confs"],
        val["preds"],
        m,
        get_target(rule.target),
        num_classes,
        cascade_aware=rule.calibration == "cascade",
        labels=val["labels"],
        backbone_pred=val["backbone_pred"],
        top=top,
        weights=weights,
    )


def recalibrated_curves(val, test, grid, rule: ExitRule, costs: ExitCosts, resample) -> dict:
    """Every margin's accuracy, FR and LR when the thresholds are calibrated anew on
    bootstrap resamples of the calibration part (docs/results.md, section Intervals).

    Args:
        val, test: the two parts as ``exit_signals`` returns them.
        grid: the M margins.
        resample: (val_weights (R, N_val), test_weights (R, N_test)) integer counts:
            resample r calibrates on the calibration part counted ``val_weights[r]``
            times and reads the test part counted ``test_weights[r]`` times.

    Returns:
        ``accuracy``, ``fr``, ``lr``: (R, M) float64 (``lr`` NaN without times). A
        global rule reads no calibration data: (0, M).
    """
    val_weights, test_weights = resample
    if rule.thresholds == "global":
        return {key: np.empty((0, len(grid))) for key in ("accuracy", "fr", "lr")}
    thr = rule_thresholds(val, grid, rule, val_weights)  # (R, M, L, C)
    sets, m = thr.shape[:2]
    tw = np.asarray(test_weights, dtype=np.float32)
    total = tw.sum(axis=1, dtype=np.float64)[:, None]
    macs = np.asarray(costs.macs, dtype=np.float64) / costs.total_macs
    times = np.full(macs.shape, np.nan) if costs.times_ms is None else np.asarray(costs.times_ms)
    labels = np.asarray(test["labels"])
    out = {key: np.empty((sets, m)) for key in ("accuracy", "fr", "lr")}
    step = max(1, CELLS_PER_CHUNK // max(m * tw.shape[1], 1))
    for lo in range(0, sets, step):
        w = tw[lo : lo + step]
        still = np.ones((w.shape[0], m, w.shape[1]), dtype=bool)  # not yet released
        right = np.zeros((w.shape[0], m))
        leave = []  # weight leaving at each exit position, (r, M) each
        for b, (conf, pred) in enumerate(zip(test["confs"], test["preds"], strict=True)):
            pred = np.asarray(pred, dtype=np.int64)
            released = still & (np.asarray(conf)[None, None] > thr[lo : lo + step, :, b][..., pred])
            still &= ~released
            leave.append(np.einsum("rmn,rn->rm", released, w, dtype=np.float64))
            right += np.einsum("rmn,rn->rm", released, w * (pred == labels), dtype=np.float64)
        leave.append(np.einsum("rmn,rn->rm", still, w, dtype=np.float64))
        bb_right = w * (np.asarray(test["backbone_pred"]) == labels)
        right += np.einsum("rmn,rn->rm", still, bb_right, dtype=np.float64)
        part = total[lo : lo + step]
        out["accuracy"][lo : lo + step] = right / part
        share = np.stack(leave, axis=-1) / part[..., None]  # (r, M, L+1)
        out["fr"][lo : lo + step] = 1.0 - share @ macs
        out["lr"][lo : lo + step] = 1.0 - share @ times / costs.backbone_ms
    return out


def summary_table(exits: dict, costs: ExitCosts) -> pd.DataFrame:
    """One row per margin of ``exits`` (``margins``, ``exit_branch`` (M, N), ``final_pred``,
    ``labels``, ``backbone_pred``), columns ``sweep_columns(L)``."""
    macs = np.asarray(costs.macs, dtype=np.float64)
    num_exits = macs.shape[0]
    exit_branch = exits["exit_branch"]  # (M, N)
    m, n = exit_branch.shape
    offsets = exit_branch + num_exits * np.arange(m)[:, None]
    fracs = np.bincount(offsets.ravel(), minlength=m * num_exits).reshape(m, num_exits) / n
    mean_macs = fracs @ macs
    times = np.full(num_exits, np.nan) if costs.times_ms is None else np.asarray(costs.times_ms)
    mean_ms = fracs @ times.astype(np.float64)
    labels = exits["labels"]
    table = pd.DataFrame(
        {
            "margin": exits["margins"],
            "accuracy": np.mean(exits["final_pred"] == labels[None, :], axis=1),
            "fr": 1.0 - mean_macs / costs.total_macs,
            "lr": 1.0 - mean_ms / costs.backbone_ms,
            "backbone_accuracy": np.mean(exits["backbone_pred"] == labels),
        }
    )
    for b in range(num_exits):
        name = "exit_frac_backbone" if b == num_exits - 1 else f"exit_frac_{b + 1}"
        table[name] = fracs[:, b]
    table["mean_macs"], table["mean_ms"] = mean_macs, mean_ms
    return table


def sweep(
    val: dict,
    test: dict,
    margins: Sequence[float],
    rule: ExitRule,
    costs: ExitCosts,
    resample=None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Calibrate on ``val`` and evaluate on ``test`` at every margin.

    Args:
        val, test: dicts with ``confs`` and ``preds`` (lists over L branches of (N,)
            arrays: the branch files' signal and prediction), ``logits`` (list of
            (N, C); needed by signals computed from logits), ``labels`` (N,; None on
            ``val`` for a rule that reads no labels), ``backbone_pred`` (N,) and
            ``num_classes``.
        margins: distinct margins in [0, 1] (``margin_grid``).
        rule: the exit rule.
        costs: per-exit MACs and, if measured, milliseconds.
        resample: (val_weights, test_weights) of ``recalibrated_curves``, or None.

    Returns:
        table: one row per margin, columns ``sweep_columns(L)``.
        thresholds: ``margin_key(m)`` -> (L, C), and ``temperature`` (L,) when fitted.
        exits: ``margins`` (M,), ``exit_branch`` (M, N) with L = backbone, ``final_pred``
            (M, N), ``labels``, ``backbone_pred`` (N,), ``signal`` and ``branch_pred``
            (L, N: each branch's signal and prediction), ``costs``, ``total_macs``,
            ``times_ms``, ``backbone_ms``; with ``resample``, ``recal_accuracy``,
            ``recal_fr`` and ``recal_lr`` (``recalibrated_curves``).
    """
    logits = rule.signal not in FILE_SIGNALS
    num_branches = _check_split(val, "val", logits)
    if _check_split(test, "test", logits) != num_branches:
        raise CalexError("val and test hold outputs of a different number of branches")
    if test["labels"] is None:
        raise CalexError("the test split has no labels; accuracy cannot be measured")
    grid = margin_grid(margins)
    macs = np.asarray(costs.macs, dtype=np.float64)
    if macs.shape != (num_branches + 1,) or costs.total_macs <= 0:
        raise CalexError(
            f"need {num_branches + 1} exit costs and a positive total, got {macs.shape[0]} "
            f"costs and total {costs.total_macs}"
        )
    val, test, temps = exit_signals(val, test, rule)
    thr = rule_thresholds(val, grid, rule)  # (M, L, C)
    exit_branch, final_pred = run_cascade(
        test["confs"], test["preds"], list(thr.transpose(1, 0, 2)), test["backbone_pred"]
    )
    times = np.full(num_branches + 1, np.nan) if costs.times_ms is None else costs.times_ms
    exits = {
        "margins": np.asarray(grid, dtype=np.float64),
        "exit_branch": exit_branch,
        "final_pred": final_pred,
        "labels": np.asarray(test["labels"], dtype=np.int64),
        "backbone_pred": np.asarray(test["backbone_pred"], dtype=np.int64),
        "signal": np.stack([np.asarray(s, dtype=np.float64) for s in test["confs"]]),
        "branch_pred": np.stack([np.asarray(p, dtype=np.int64) for p in test["preds"]]),
        "costs": macs,
        "total_macs": np.float64(costs.total_macs),
        "times_ms": np.asarray(times, dtype=np.float64),
        "backbone_ms": np.float64(costs.backbone_ms),
    }
    if resample is not None:
        curves = recalibrated_curves(val, test, grid, rule, costs, resample)
        exits |= {f"recal_{key}": value for key, value in curves.items()}
    thresholds = {margin_key(m): thr[i] for i, m in enumerate(grid)}
    if temps is not None:
        thresholds["temperature"] = temps
    return summary_table(exits, costs), thresholds, exits


def compact(exits: dict) -> dict:
    """``exits`` with the per-sample index arrays in the smallest integer type that holds
    them (int8 exit positions, int16 classes for up to 32767): the file is M times the
    test size. Cast to int64 before arithmetic that could overflow."""
    small = {}
    for key in ("exit_branch", "final_pred", "branch_pred"):
        values = exits[key]
        top = int(values.max()) if values.size else 0
        dtype = np.int8 if top < 2**7 else np.int16 if top < 2**15 else np.int32
        small[key] = values.astype(dtype)
    return exits | small


def per_class_exits(exits: dict, num_branches: int, num_classes: int, margins=None) -> pd.DataFrame:
    """Exit counts per (margin, exit position, ground-truth class), zeros included.

    Args:
        exits: as returned by ``sweep``.
        margins: the margins to count (default: every margin of ``exits``).

    Returns:
        columns ``margin, branch, class, count``; ``branch`` is 1..L for the
        branches and L+1 for the backbone; ``class`` is the sample's label.
    """
    rows = np.arange(len(exits["margins"]))
    if margins is not None:
        wanted = {margin_key(float(m)) for m in margins}
        rows = np.array([i for i, m in enumerate(exits["margins"]) if margin_key(m) in wanted])
    slots = (num_branches + 1) * num_classes
    exit_branch = np.asarray(exits["exit_branch"], dtype=np.int64)[rows]
    keys = exit_branch * num_classes + np.asarray(exits["labels"], dtype=np.int64)[None, :]
    counts = np.stack([np.bincount(k, minlength=slots) for k in keys])  # (M, (L+1)*C)
    margin_col = np.repeat(np.asarray(exits["margins"])[rows], slots)
    branch_col = np.tile(np.repeat(np.arange(1, num_branches + 2), num_classes), len(rows))
    class_col = np.tile(np.arange(num_classes), len(rows) * (num_branches + 1))
    return pd.DataFrame(
        {"margin": margin_col, "branch": branch_col, "class": class_col, "count": counts.ravel()}
    )


def sweep_split(val: dict, test: dict, split: int, seed: int, grid, rule: ExitRule,
                costs: ExitCosts, resamples: int = 0, bootstrap_seed: int = 0):  # fmt: skip
    """``sweep`` on calibration/test split ``split`` of the held-out pool [val; test].

    The parts are re-drawn with ``seed`` (``data.splits.repartition``; split 0 is the
    prepared partition), and the thresholds recalibrated on ``resamples`` bootstrap
    resamples of the pool (``data.splits.pool_resamples`` with ``bootstrap_seed``).
    Returns ``sweep``'s (table, thresholds, exits), the exits with the test part's
    pool positions ``test_index``, ``pool_size`` and ``bootstrap_seed``.
    """
    cal, tested, val_pos, test_pos = repartition(val, test, split, seed)
    pool = len(val["backbone_pred"]) + len(test["backbone_pred"])
    weights = pool_resamples(pool, range(1, resamples + 1), bootstrap_seed)
    table, thresholds, exits = sweep(
        cal, tested, grid, rule, costs, (weights[:, val_pos], weights[:, test_pos])
    )
    exits |= {"test_index": test_pos, "pool_size": np.int64(pool),
              "bootstrap_seed": np.int64(bootstrap_seed)}  # fmt: skip
    return table, thresholds, exits
