"""Loss-at-fixed-FR tables: per seed, summarised over seeds, and printed (SPEC section 10)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from calex_steps.errors import CalexError
from calex_steps.reporting.curves import interpolate_at_fr

FR_TARGETS = (0.4, 0.5, 0.6, 0.7, 0.8)
MISSING = "—"  # printed for a target the curve does not reach
SWEEP_KEYS = ("dataset", "backbone", "recipe", "seed", "split")


def _numbered(part: str, prefix: str) -> int | None:
    """``seed3`` -> 3 for prefix ``seed``; None when ``part`` is not of that form."""
    rest = part[len(prefix) :]
    return int(rest) if part.startswith(prefix) and rest.isdigit() else None


def parse_run_path(path: str | Path) -> dict:
    """Dataset, backbone, recipe, seed and split of
    ``results/{d}/{b}/{r}/seed{s}/split{k}/<file>`` (or ``.../seed{s}/<file>``: split 0)."""
    parts = Path(path).parts
    split = _numbered(parts[-2], "split") if len(parts) >= 2 else None
    if split is not None:
        parts = parts[:-2] + parts[-1:]
    if len(parts) < 5 or _numbered(parts[-2], "seed") is None:
        raise CalexError(
            f"{path} is not laid out as results/DATASET/BACKBONE/RECIPE/seedN/splitK/FILE; "
            "pass the sweep files the workflow wrote"
        )
    return {
        "dataset": parts[-5],
        "backbone": parts[-4],
        "recipe": parts[-3],
        "seed": _numbered(parts[-2], "seed"),
        "split": split or 0,
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
