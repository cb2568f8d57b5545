"""Exit-conditional calibration: ECE of the samples a branch releases (docs/results.md#figures)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from calex_steps.reporting import metrics
from calex_steps.reporting.figures.runs import margin_row, mean_std
from calex_steps.reporting.figures.style import recipe_color, style

ECE_MARGINS = (0.05, 0.2, 0.4)


def ece_table(runs: Sequence[dict], margins: Sequence[float]) -> pd.DataFrame:
    """Exit-conditional ECE of every branch of every run at each margin.

    Only the samples that exited at branch l count; the bins span the
    branch's lowest threshold to 1.0; correctness is against ground truth.
    """
    rows = []
    for run in runs:
        for margin in margins:
            row = margin_row(run, margin)
            thresholds = run["thresholds"][f"m{margin:g}"]  # (L, C)
            for b in range(run["num_branches"]):
                exited = run["exit_branch"][row] == b  # (N,)
                conf = run["conf"][b][exited]
                correct = run["pred"][b][exited] == run["labels"][exited]
                low = min(float(thresholds[b].min()), 1.0 - 1e-6)
                ece = metrics.expected_calibration_error(conf, correct, low)
                rows.append((margin, run["recipe"], run["seed"], f"B{b + 1}", ece, conf.size))
    frame = pd.DataFrame(rows, columns=["margin", "recipe", "seed", "position", "ece", "n"])
    return mean_std(frame, ["margin", "recipe", "position"], ["ece", "n"])


def _grouped_bars(ax, frame: pd.DataFrame, column: str, positions: Sequence[str], recipes) -> None:
    """Bars of ``column`` (mean, with std whiskers) per position, one colour per recipe."""
    present = [r for r in recipes if r in set(frame["recipe"])]
    width = 0.8 / max(len(present), 1)
    for i, recipe in enumerate(present):
        rows = frame[frame["recipe"] == recipe].set_index("position")
        mean = rows[f"{column}_mean"].reindex(positions).to_numpy(dtype=float)
        std = rows[f"{column}_std"].reindex(positions).to_numpy(dtype=float)
        count = rows["n_mean"].reindex(positions).fillna(0).to_numpy(dtype=float)
        x = np.arange(len(positions)) - 0.4 + width * (i + 0.5)
        color = recipe_color(recipe, recipes)
        yerr = None if np.isnan(std).all() else np.nan_to_num(std)  # no whiskers for one seed
        ax.bar(x, mean, width, yerr=yerr, color=color, label=recipe, capsize=2, ecolor="0.3")
        for xi, m, n in zip(x, mean, count, strict=True):
            # The number of samples behind each bar: an ECE over a handful means little.
            label = "n/a" if not np.isfinite(m) else f"{n:.0f}"
            top = m if np.isfinite(m) else 0.0
            ax.text(xi, top, label, ha="center", va="bottom", fontsize=6, color="0.25")
    ax.set_xticks(np.arange(len(positions)), positions)


def plot_calibration(
    ece: pd.DataFrame, panels: Sequence[tuple[float, str]], recipes, title: str
) -> plt.Figure:
    """Exit-conditional ECE per branch, one panel per margin, bars per recipe.

    Args:
        ece: columns ``margin, recipe, position, ece_mean, ece_std, n_mean`` (n:
            exits at that branch, printed above each bar).
        panels: (margin used, panel title) pairs.
        recipes: legend order.
        title: figure title.
    """
    positions = sorted(ece["position"].unique(), key=lambda p: int(p[1:]))
    top = np.nanmax(ece["ece_mean"] + ece["ece_std"].fillna(0)) if len(ece) else 0.1
    with style():
        fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.6), sharey=True)
        for ax, (margin, panel_title) in zip(np.atleast_1d(axes), panels, strict=True):
            _grouped_bars(ax, ece[ece["margin"] == margin], "ece", positions, recipes)
            ax.set_title(panel_title)
            ax.set_xlabel("exit branch")
            ax.set_ylim(0, max(float(top) * 1.15, 0.05))
        np.atleast_1d(axes)[0].set_ylabel("ECE of the samples exiting there")
        handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 7),
                   bbox_to_anchor=(0.5, 0.0), frameon=False)  # fmt: skip
        fig.suptitle(title)
        fig.tight_layout()
    return fig
