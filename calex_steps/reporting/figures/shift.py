"""Covariate shift: the class mix of the samples reaching each exit (docs/results.md#figures)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from calex_steps.reporting import metrics
from calex_steps.reporting.figures.runs import margin_row, mean_std
from calex_steps.reporting.figures.style import exit_labels, recipe_color, style

SHIFT_MARGIN = 0.2

SHIFT_PANELS = (
    ("kl", "KL(full ‖ survivors) [nats]"),
    ("gini", "Gini coefficient of survivors"),
    ("top3", "top-3 class share of survivors"),
)


def shift_table(runs: Sequence[dict], margin: float, num_classes: int) -> pd.DataFrame:
    """KL(full ‖ survivors), Gini and top-3 share of the samples reaching each exit position."""
    rows = []
    for run in runs:
        exit_branch = run["exit_branch"][margin_row(run, margin)]  # (N,)
        labels = run["labels"]
        full = metrics.class_distribution(labels, num_classes)
        names = exit_labels(run["num_branches"])
        for position, name in enumerate(names):
            reach = labels[exit_branch >= position]  # samples no earlier branch released
            counts = np.bincount(reach, minlength=num_classes)
            # Half a sample per class keeps the KL finite when a class has no survivor.
            smooth = metrics.class_distribution(reach, num_classes, pseudo_count=0.5)
            kl = metrics.kl_divergence(full, smooth) if reach.size else np.nan
            gini = metrics.gini_coefficient(counts)
            top3 = metrics.top_k_share(counts, 3)
            rows.append((run["recipe"], run["seed"], name, kl, gini, top3))
    frame = pd.DataFrame(rows, columns=["recipe", "seed", "position", "kl", "gini", "top3"])
    return mean_std(frame, ["recipe", "position"], ["kl", "gini", "top3"])


def plot_shift(
    shift: pd.DataFrame, positions: Sequence[str], recipes, num_classes: int, title: str
) -> plt.Figure:
    """Class-distribution shift of the samples reaching each exit, three statistics.

    Args:
        shift: columns ``recipe, position`` and ``{kl,gini,top3}_{mean,std}``.
        positions: exit positions in cascade order (B1.., backbone).
        recipes: legend order.
        num_classes: for the uniform reference of the top-3 share (3/C).
        title: figure title.
    """
    present = [r for r in recipes if r in set(shift["recipe"])]
    x = np.arange(len(positions))
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.7))
        for ax, (stat, label) in zip(axes, SHIFT_PANELS, strict=True):
            for i, recipe in enumerate(present):
                rows = shift[shift["recipe"] == recipe].set_index("position").reindex(positions)
                offset = (i - (len(present) - 1) / 2) * 0.04  # keep whiskers apart
                std = rows[f"{stat}_std"]
                ax.errorbar(x + offset, rows[f"{stat}_mean"],
                            yerr=None if std.isna().all() else std.fillna(0),
                            color=recipe_color(recipe, recipes), marker="o", ms=4, capsize=2,
                            label=recipe)  # fmt: skip
            reference = {"kl": 0.0, "gini": 0.0, "top3": min(3 / num_classes, 1.0)}[stat]
            ax.axhline(reference, color="0.4", ls="--", lw=0.8)
            ax.set_xticks(x, positions)
            ax.set_xlabel("samples reaching")
            ax.set_title(label, fontsize=10)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 7),
                   bbox_to_anchor=(0.5, 0.0), frameon=False)  # fmt: skip
        fig.suptitle(title)
        fig.tight_layout()
    return fig
