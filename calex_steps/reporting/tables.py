"""The tables: long CSV frames of estimates with intervals, and their Markdown and LaTeX forms.

Every cell carries its status: ``measured`` (inside the range the sweep
reached in every run), ``extrapolated`` (past it in some run, by at most the
tolerance: printed with a dagger) or ``missing`` (further out: printed "—").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from calex_steps.reporting.bootstrap import Estimate, axis_readings, interval
from calex_steps.reporting.curves import MISSING, STATUS_NAMES

FR_TARGETS = (0.4, 0.5, 0.6, 0.7, 0.8)
ABLATION_FRS = (0.4, 0.6)  # the FRs of the paper's 2×2 ablation (its Table A3)
MISSING_MARK = "—"
EXTRAPOLATED_MARK = "†"
NOT_MEASURED = "not measured"

# How each table names its targets: CSV column, Markdown header of one target.
TARGETS = {
    "loss_fr": ("fr_target", "FR {:g}"),
    "loss_lr": ("lr_target", "LR {:g}"),
    "iso_fr": ("loss_budget", "loss ≤ {:g} pp"),
}


def long_table(
    est: Estimate,
    reference: int | None,
    where: dict,
    recipes: Sequence[str],
    view: str,
    confidence: float,
) -> pd.DataFrame:
    """One row per recipe and target: estimate, interval, spread, status, paired difference.

    Args:
        est: the view's estimate for one (dataset, backbone).
        reference: row of the reference recipe in ``recipes`` (None: no differences).
        where: ``dataset`` and ``backbone``.
        recipes: the recipes of ``est``, in its order.
        view: a key of ``TARGETS``.
        confidence: interval level.
    """
    lo, hi = interval(est.reps, confidence)
    spread = est.spread()
    if reference is None:
        diff = dlo = dhi = np.full(est.point.shape, np.nan)
    else:
        paired = est.paired(reference)
        diff = np.where(paired.status == MISSING, np.nan, paired.point)
        dlo, dhi = interval(paired.reps, confidence)
    rows = []
    for r, recipe in enumerate(recipes):
        for t, target in enumerate(est.targets):
            rows.append({
                **where, "recipe": recipe, TARGETS[view][0]: float(target),
                "mean": est.point[r, t], "ci_lo": lo[r, t], "ci_hi": hi[r, t],
                "std": spread[r, t], "runs": est.per_run.shape[1],
                "status": STATUS_NAMES[est.status[r, t]], "reached": est.reached[r],
                "reference": "" if reference is None else recipes[reference],
                "diff": diff[r, t], "diff_lo": dlo[r, t], "diff_hi": dhi[r, t],
            })  # fmt: skip
    return pd.DataFrame(rows)


def number(value: float, digits: int, sign: bool = False) -> str:
    """``value`` rounded to ``digits`` decimals, never printed as '-0.0' (with ``sign``,
    always signed: '+0.4')."""
    text = f"{value:{'+' if sign else ''}.{digits}f}"
    return f"{0.0:{'+' if sign else ''}.{digits}f}" if float(text) == 0 else text


def cell_text(mean: float, lo: float, hi: float, status: str, digits: int) -> str:
    """'14.4 [13.2, 15.6]', with a dagger when extrapolated and '—' when missing."""
    if status == "missing" or not np.isfinite(mean):
        return MISSING_MARK
    text = f"{number(mean, digits)} [{number(lo, digits)}, {number(hi, digits)}]"
    return text + (EXTRAPOLATED_MARK if status == "extrapolated" else "")


def wide_table(long: pd.DataFrame, recipes: Sequence[str], view: str, digits: int, diff=False):
    """Recipes × targets of one backbone, each cell the estimate (or the paired difference)
    with its interval; the reference's own difference row reads 'reference'."""
    column, header = TARGETS[view]
    keyed = long.set_index(["recipe", column])
    cells = {}
    for target in sorted(long[column].unique()):
        texts = []
        for recipe in recipes:
            row = keyed.loc[(recipe, target)]
            if diff and row["reference"] == recipe:
                texts.append("reference")
                continue
            names = ("diff", "diff_lo", "diff_hi") if diff else ("mean", "ci_lo", "ci_hi")
            texts.append(cell_text(*(row[n] for n in names), row["status"], digits))
        cells[header.format(target)] = texts
    return pd.DataFrame(cells, index=pd.Index(list(recipes), name="recipe"))


def to_markdown(wide: pd.DataFrame) -> str:
    """A Markdown table of a wide table."""
    header = ["recipe", *wide.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for recipe, row in wide.iterrows():
        lines.append("| " + " | ".join([f"`{recipe}`", *row.tolist()]) + " |")
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    """Escape LaTeX's special characters; write the marks and signs as LaTeX."""
    for char in ("\\", "&", "%", "$", "#", "_", "{", "}"):
        text = text.replace(char, "\\" + char)
    text = text.replace(MISSING_MARK, "---").replace(EXTRAPOLATED_MARK, "\\textsuperscript{\\dag}")
    return text.replace("≤", "$\\leq$")


def to_latex(blocks: Sequence[tuple[str, pd.DataFrame]], caption: str, label: str) -> str:
    """A booktabs ``table``: one titled block of rows per (title, wide table); without
    blocks (nothing measured), a comment saying so."""
    if not blocks:
        return f"% {caption}\n% {NOT_MEASURED}: no table\n"
    columns = list(blocks[0][1].columns)
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{_latex_escape(caption)}}}",
        f"\\label{{{label}}}",
        f"\\begin{{tabular}}{{l{'c' * len(columns)}}}",
        "\\toprule",
        " & ".join(["Recipe", *map(_latex_escape, columns)]) + " \\\\",
    ]
    for title, wide in blocks:
        span = len(columns) + 1
        lines += [
            "\\midrule",
            f"\\multicolumn{{{span}}}{{l}}{{\\emph{{{_latex_escape(title)}}}}} \\\\",
        ]
        for recipe, row in wide.iterrows():
            lines.append(" & ".join(_latex_escape(str(c)) for c in [recipe, *row]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def view_documents(
    long: pd.DataFrame, recipes, view: str, digits: int, title: str, notes: str, headers: dict
) -> tuple[str, str]:
    """The Markdown and LaTeX documents of one view of one dataset.

    Per backbone (``headers``: backbone -> the line under its name, e.g. what
    the intervals cover), the estimates and, when there is a reference, the
    paired differences; a backbone whose cells are all ``not measured`` gets a
    line saying so instead.
    """
    md = [title, "", notes, ""]
    blocks = []
    for backbone, header in headers.items():
        part = long[long["backbone"] == backbone]
        if part.empty or (part["status"] == NOT_MEASURED).all():
            md += [f"**{backbone}**: {NOT_MEASURED} ({header}).", ""]
            continue
        wide = wide_table(part, recipes, view, digits)
        md += [f"**{backbone}** ({header})", "", to_markdown(wide)]
        blocks.append((backbone, wide))
        reference = part["reference"].iloc[0]
        if reference:
            diff = wide_table(part, recipes, view, digits, diff=True)
            md += [f"**{backbone}**, paired difference to `{reference}`", "", to_markdown(diff)]
            blocks.append((f"{backbone}, paired difference to {reference}", diff))
    label = f"tab:{view.replace('_', '-')}-{long['dataset'].iloc[0]}"
    return "\n".join(md), to_latex(blocks, f"{title} {notes}", label)


def paper_grid(sweeps: pd.DataFrame, frontier: pd.DataFrame, targets, tolerance: float):
    """The loss read on the paper's margins (``sweep.csv``) beside the dense frontier's.

    Each run's paper-grid curve is read exactly as the frontier is (same anchor,
    interpolation, tolerance); runs are pooled by their mean, the worst status
    decides. ``moved`` = paper grid − frontier, in points.

    Args:
        sweeps: ``runfiles.read_tables`` of the ``sweep.csv`` files.
        frontier: the ``loss_fr`` long table (point estimates and statuses).
    """
    rows = []
    for (dataset, backbone, recipe), group in sweeps.groupby(
        ["dataset", "backbone", "recipe"], sort=False
    ):
        losses, statuses = [], []
        for _, run in group.groupby(["seed", "split"]):
            fr, acc = run[["fr"]].to_numpy(float), run[["accuracy"]].to_numpy(float)
            bb = run["backbone_accuracy"].to_numpy(float)[:1]
            loss, status = axis_readings(fr, acc, bb, targets, tolerance)["loss"]
            losses.append(loss[:, 0])
            statuses.append(status)
        worst = np.max(statuses, axis=0)
        mean = np.where(worst == MISSING, np.nan, np.mean(losses, axis=0))
        for t, target in enumerate(targets):
            rows.append((dataset, backbone, recipe, float(target), mean[t], STATUS_NAMES[worst[t]]))
    columns = ["dataset", "backbone", "recipe", "fr_target", "paper_grid", "paper_status"]
    paper = pd.DataFrame(rows, columns=columns)
    dense = frontier[["dataset", "backbone", "recipe", "fr_target", "mean", "status"]]
    dense = dense.rename(columns={"mean": "frontier", "status": "frontier_status"})
    out = paper.merge(dense, on=["dataset", "backbone", "recipe", "fr_target"], how="left")
    return out.assign(moved=out["paper_grid"] - out["frontier"])


def paper_grid_markdown(table: pd.DataFrame, recipes, backbones, digits: int, title: str) -> str:
    """Per backbone, recipes × FR: 'paper-grid loss (moved)', with the marks of both grids."""

    def text(row) -> str:
        if row["paper_status"] == "missing" or not np.isfinite(row["paper_grid"]):
            return MISSING_MARK
        mark = EXTRAPOLATED_MARK if row["paper_status"] == "extrapolated" else ""
        moved = "n/a" if not np.isfinite(row["moved"]) else number(row["moved"], digits, True)
        return f"{number(row['paper_grid'], digits)}{mark} ({moved})"

    md = [title, ""]
    for backbone in backbones:
        part = table[table["backbone"] == backbone].set_index(["recipe", "fr_target"])
        if part.empty:
            continue
        targets = sorted(part.index.get_level_values(1).unique())
        wide = pd.DataFrame(
            {f"FR {t:g}": [text(part.loc[(r, t)]) for r in recipes] for t in targets},
            index=pd.Index(list(recipes), name="recipe"),
        )
        md += [f"**{backbone}**", "", to_markdown(wide)]
    return "\n".join(md)
