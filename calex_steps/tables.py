"""Comparing methods at a common FLOPs reduction (SPEC section 10)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from calex_steps.io import CalexError

# Slack when testing a target against the measured range, so that e.g. 0.4 + 0.08
# computed in floating point still counts as "within 0.08".
_RANGE_EPS = 1e-9


def _merge_duplicates(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort points by x and average y over points that share the same x."""
    ux, inverse = np.unique(x, return_inverse=True)  # ux sorted ascending
    uy = np.bincount(inverse, weights=y) / np.bincount(inverse)
    return ux, uy


def interpolate_curve(x, y, targets, tolerance: float = 0.08) -> np.ndarray:
    """A piecewise-linear curve through (x, y) read at ``targets``.

    Points in any order; points sharing an x are merged at their mean y. Past
    either end the curve continues along its end segment, by at most
    ``tolerance``; a target further out is NaN, and so is every target of a
    curve without points. Returns float64 with the shape of ``targets``.
    """
    t = np.asarray(targets, dtype=np.float64)
    flat = t.ravel()
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.size == 0:
        return np.full(t.shape, np.nan)
    x, y = _merge_duplicates(x, y)
    if x.size == 1:
        out = np.full(flat.shape, y[0])
    else:
        out = np.interp(flat, x, y)
        above, below = flat > x[-1], flat < x[0]
        slope_hi = (y[-1] - y[-2]) / (x[-1] - x[-2])
        slope_lo = (y[1] - y[0]) / (x[1] - x[0])
        out[above] = y[-1] + (flat[above] - x[-1]) * slope_hi
        out[below] = y[0] + (flat[below] - x[0]) * slope_lo
    outside = (flat < x[0] - tolerance - _RANGE_EPS) | (flat > x[-1] + tolerance + _RANGE_EPS)
    out[outside] = np.nan
    return out.reshape(t.shape)


def interpolate_at_fr(fr, acc, backbone_acc: float, targets, tolerance: float = 0.08) -> np.ndarray:
    """Accuracy of one seed's Pareto curve at target FLOPs reductions.

    The measured (FR, accuracy) points, in any order, are joined by the anchor
    (0, backbone_acc): the backbone alone is a real operating point at FR 0.
    Points sharing an FR (the anchor included, if a margin lands exactly on 0)
    are merged into one point at their mean accuracy. Between points the curve
    is linear; past the largest FR it continues along the last segment (and
    below the smallest point, which is only ever a negative FR, along the first).

    Args:
        fr: (M,) measured FLOPs reductions, one per margin.
        acc: (M,) accuracies at those points.
        backbone_acc: the backbone's accuracy (the anchor).
        targets: (T,) FRs to read the curve at (a scalar works too).
        tolerance: how far beyond the range spanned by the anchor and the
            measured points a target may lie and still be extrapolated.

    Returns:
        Accuracies with the shape of ``targets``, float64; NaN ("—" in the
        tables) for a target more than ``tolerance`` outside the range
        [min(0, min fr), max fr].
    """
    fr = np.asarray(fr, dtype=np.float64).ravel()
    acc = np.asarray(acc, dtype=np.float64).ravel()
    if fr.shape != acc.shape:
        raise CalexError(f"got {fr.size} FR values but {acc.size} accuracies; pass one per margin")
    if not (np.all(np.isfinite(fr)) and np.all(np.isfinite(acc)) and np.isfinite(backbone_acc)):
        raise CalexError("FR, accuracy and backbone accuracy must be finite numbers")
    return interpolate_curve(np.r_[0.0, fr], np.r_[backbone_acc, acc], targets, tolerance)


# ---- loss-at-fixed-FR tables -------------------------------------------------

FR_TARGETS = (0.4, 0.5, 0.6, 0.7, 0.8)
MISSING = "—"  # printed for a target the curve does not reach
SWEEP_KEYS = ("dataset", "backbone", "recipe", "seed")


def parse_run_path(path: str | Path) -> dict:
    """Dataset, backbone, recipe and seed of ``results/{d}/{b}/{r}/seed{s}/<file>``."""
    parts = Path(path).parts
    if len(parts) < 5 or not parts[-2].startswith("seed") or not parts[-2][4:].isdigit():
        raise CalexError(
            f"{path} is not laid out as results/DATASET/BACKBONE/RECIPE/seedN/FILE; "
            "pass the sweep files the workflow wrote"
        )
    return {
        "dataset": parts[-5],
        "backbone": parts[-4],
        "recipe": parts[-3],
        "seed": int(parts[-2][4:]),
    }


def read_sweeps(paths: Sequence[str | Path]) -> pd.DataFrame:
    """All ``sweep.csv`` files in one frame, tagged with dataset, backbone, recipe, seed."""
    frames = []
    for path in paths:
        if not Path(path).is_file():
            raise CalexError(f"sweep table {path} does not exist; run sweep_margins first")
        frame = pd.read_csv(path)
        missing = {"margin", "accuracy", "fr", "backbone_accuracy"} - set(frame.columns)
        if missing or frame.empty:
            raise CalexError(f"{path} lacks rows or columns {sorted(missing)}; rerun sweep_margins")
        frames.append(frame.assign(**parse_run_path(path)))
    if not frames:
        raise CalexError("no sweep tables were given")
    return pd.concat(frames, ignore_index=True)


def loss_per_seed(
    sweeps: pd.DataFrame, targets: Sequence[float] = FR_TARGETS, tolerance: float = 0.08
) -> pd.DataFrame:
    """Accuracy loss in points at each target FR, for every (dataset, backbone, recipe, seed).

    Returns:
        columns ``dataset, backbone, recipe, seed, fr_target, loss``, where
        loss = 100·(backbone accuracy − interpolated accuracy), NaN for "—".
    """
    rows = []
    for key, run in sweeps.groupby(list(SWEEP_KEYS), sort=False):
        backbone_acc = float(run["backbone_accuracy"].iloc[0])
        acc = interpolate_at_fr(run["fr"], run["accuracy"], backbone_acc, targets, tolerance)
        for target, value in zip(targets, acc, strict=True):
            rows.append((*key, float(target), 100.0 * (backbone_acc - value)))
    return pd.DataFrame(rows, columns=[*SWEEP_KEYS, "fr_target", "loss"])


def summarise_loss(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof 1) over seeds of the loss at each target FR.

    The mean is NaN ("—") unless every seed reaches the target: a mean over
    the lucky seeds alone would flatter the recipe. ``seeds`` counts the seeds
    that reach it; ``std`` is NaN with fewer than two.

    Returns:
        columns ``dataset, backbone, recipe, fr_target, mean, std, seeds``.
    """
    keys = ["dataset", "backbone", "recipe", "fr_target"]
    grouped = per_seed.groupby(keys, sort=False)["loss"]
    out = grouped.agg(
        mean=lambda s: s.mean() if s.notna().all() else np.nan,
        std=lambda s: s.std(ddof=1) if s.notna().all() and s.size > 1 else np.nan,
        seeds=lambda s: int(s.notna().sum()),
    )
    return out.reset_index()


def format_cell(values: Sequence[float], digits: int = 2) -> str:
    """One table cell: the values of each backbone joined by '/', '—' for NaN."""
    return "/".join(MISSING if not np.isfinite(v) else f"{v:.{digits}f}" for v in values)


def wide_table(
    summary: pd.DataFrame,
    dataset: str,
    backbones: Sequence[str],
    recipes: Sequence[str],
    targets: Sequence[float] = FR_TARGETS,
) -> pd.DataFrame:
    """Recipes × target FRs of one dataset; each cell the backbones' mean losses, e.g. "1.20/0.85".

    Backbones and recipes keep the order given (the study's); a combination
    absent from ``summary`` prints as '—'.
    """
    means = summary[summary["dataset"] == dataset].set_index(["recipe", "fr_target", "backbone"])
    means = means["mean"]
    cells = {}
    for target in targets:
        column = []
        for recipe in recipes:
            values = [means.get((recipe, float(target), b), np.nan) for b in backbones]
            column.append(format_cell(values))
        cells[f"FR {target:g}"] = column
    return pd.DataFrame(cells, index=pd.Index(list(recipes), name="recipe"))


def to_markdown(wide: pd.DataFrame, title: str) -> str:
    """A Markdown table with a one-line title above it."""
    header = ["recipe", *wide.columns]
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for recipe, row in wide.iterrows():
        lines.append("| " + " | ".join([str(recipe), *row.tolist()]) + " |")
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    """Escape the characters of recipe and backbone names that LaTeX treats specially."""
    for char in ("\\", "&", "%", "$", "#", "_", "{", "}"):
        text = text.replace(char, "\\" + char)
    return text.replace("—", "---")


def to_latex(wide: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs ``table`` environment of the wide table."""
    spec = "l" + "c" * len(wide.columns)
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{_latex_escape(caption)}}}",
        f"\\label{{{label}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(["Recipe", *map(_latex_escape, wide.columns)]) + " \\\\",
        "\\midrule",
    ]
    for recipe, row in wide.iterrows():
        lines.append(" & ".join(_latex_escape(str(c)) for c in [recipe, *row]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"
