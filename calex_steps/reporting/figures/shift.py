"""Covariate shift: the class mix of the samples reaching each exit (docs/results.md#figures)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from calex_steps.reporting import metrics
from calex_steps.reporting.figures.runs import exit_rows, exits_per_recipe, margin_row, mean_std
from calex_steps.reporting.figures.style import percent, recipe_color, style

SHIFT_MARGIN = 0.2

SHIFT_PANELS = (
    ("kl", "KL(full ‖ survivors) [nats]"),
    ("gini", "Gini coefficient of survivors"),
    ("top3", "top-3 class share of survivors"),
)


def shift_table(runs: Sequence[dict], margin: float, num_classes: int) -> pd.DataFrame:
    """KL(full ‖ survivors), Gini and top-3 share of the samples reaching each exit.

    Returns:
        columns ``recipe``, ``exits`` (the recipe's number of branch exits L),
        ``exit`` (1..L+1, L+1 the backbone), ``position`` (B1..BL, backbone),
        ``cost`` (the exit's share of the backbone's MACs) and
        ``{kl,gini,top3}_{mean,std}`` over seeds.
    """
    counts_of = exits_per_recipe(runs)
    rows = []
    for run in runs:
        exit_branch = run["exit_branch"][margin_row(run, margin)]  # (N,)
        labels = run["labels"]
        full = metrics.class_distribution(labels, num_classes)
        for number, name, cost in exit_rows(run):
            reach = labels[exit_branch >= number - 1]  # samples no earlier branch released
            counts = np.bincount(reach, minlength=num_classes)
            # Half a sample per class keeps the KL finite when a class has no survivor.
            smooth = metrics.class_distribution(reach, num_classes, pseudo_count=0.5)
            kl = metrics.kl_divergence(full, smooth) if reach.size else np.nan
            gini = metrics.gini_coefficient(counts)
            top3 = metrics.top_k_share(counts, 3)
            rows.append((run["recipe"], counts_of[run["recipe"]], number, name, cost, run["seed"],
                         kl, gini, top3))  # fmt: skip
    columns = ["recipe", "exits", "exit", "position", "cost", "seed", "kl", "gini", "top3"]
    frame = pd.DataFrame(rows, columns=columns)
    keys = ["recipe", "exits", "exit", "position"]
    stats = mean_std(frame, keys, ["kl", "gini", "top3"])
    cost = frame.groupby(keys, sort=False)["cost"].mean().reset_index()
    return cost.merge(stats, on=keys, how="left", validate="one_to_one")


def plot_shift(shift: pd.DataFrame, recipes, num_classes: int, title: str) -> plt.Figure:
    """Class-distribution shift of the samples reaching each exit, three statistics.

    Each recipe is a line through its own exits, placed at their depth (the
    share of the backbone's MACs a sample pays to get there), so that recipes
    with different numbers or placements of exits share one axis; the last
    point of a line (a square) is the backbone.

    Args:
        shift: ``shift_table`` output.
        recipes: legend order.
        num_classes: for the uniform reference of the top-3 share (3/C).
        title: figure title.
    """
    present = [r for r in recipes if r in set(shift["recipe"])]
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.9))
        for ax, (stat, label) in zip(axes, SHIFT_PANELS, strict=True):
            for i, recipe in enumerate(present):
                rows = shift[shift["recipe"] == recipe].sort_values("exit")
                offset = (i - (len(present) - 1) / 2) * 0.004  # keep whiskers apart
                x = rows["cost"].to_numpy() + offset
                mean, std = rows[f"{stat}_mean"].to_numpy(), rows[f"{stat}_std"]
                color = recipe_color(recipe, recipes)
                ax.errorbar(x, mean, yerr=None if std.isna().all() else std.fillna(0),
                            color=color, marker="o", ms=4, capsize=2, label=recipe)  # fmt: skip
                ax.plot(x[-1:], mean[-1:], "s", color=color, ms=6)
            reference = {"kl": 0.0, "gini": 0.0, "top3": min(3 / num_classes, 1.0)}[stat]
            ax.axhline(reference, color="0.4", ls="--", lw=0.8)
            ax.set_xticks(ticks, [percent(t) for t in ticks])
            ax.set_xlabel("samples reaching the exit at (share of the MACs)")
            ax.set_title(label, fontsize=10)
        handles, labels = axes[0].get_legend_handles_labels()
        handles.append(plt.Line2D([], [], ls="", marker="s", color="0.3", ms=6))
        labels.append("backbone (every branch passed)")
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6),
                   bbox_to_anchor=(0.5, 0.0), frameon=False)  # fmt: skip
        fig.suptitle(title)
        fig.tight_layout()
    return fig
