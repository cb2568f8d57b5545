"""Sample flow: per class, where its test samples leave the cascade (docs/results.md#figures)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from calex_steps.reporting.figures.runs import margin_row
from calex_steps.reporting.figures.style import EXIT_PALETTE, exit_labels, recipe_color, style


def flow_table(runs: Sequence[dict], margin: float, num_classes: int) -> pd.DataFrame:
    """Share of each class's test samples leaving at each exit position, mean over seeds."""
    rows = []
    for run in runs:
        exit_branch = run["exit_branch"][margin_row(run, margin)]
        names = exit_labels(run["num_branches"])
        slots = len(names) * num_classes
        counts = np.bincount(run["labels"] * len(names) + exit_branch, minlength=slots)
        counts = counts.reshape(num_classes, len(names))  # (C, L+1)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        for c in range(num_classes):
            for p, name in enumerate(names):
                rows.append((run["recipe"], run["seed"], c, name, shares[c, p]))
    frame = pd.DataFrame(rows, columns=["recipe", "seed", "class", "position", "share"])
    return frame.groupby(["recipe", "class", "position"], sort=False)["share"].mean().reset_index()


def plot_flow(
    flow: pd.DataFrame, recipes: Sequence[str], class_names: Sequence[str], title: str
) -> plt.Figure:
    """Per class, the share of its test samples leaving at each exit, one panel per recipe.

    Args:
        flow: columns ``recipe, class, position, share`` (shares of a class sum to 1).
        recipes: panel order (recipes absent from ``flow`` are skipped).
        class_names: names by class index.
        title: figure title.
    """
    present = [r for r in recipes if r in set(flow["recipe"])]
    positions = list(dict.fromkeys(flow["position"]))
    colors = sns.color_palette(EXIT_PALETTE, len(positions))
    cols = min(len(present), 2)
    rows = -(-len(present) // cols)
    width = max(5.0, 0.32 * len(class_names) + 2.0)
    with style():
        fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 3.3 * rows), squeeze=False)
        for ax, recipe in zip(axes.ravel(), present, strict=False):
            table = flow[flow["recipe"] == recipe].pivot(index="class", columns="position",
                                                         values="share")  # fmt: skip
            table = table.reindex(index=range(len(class_names)), columns=positions).fillna(0.0)
            bottom = np.zeros(len(class_names))
            for position, color in zip(positions, colors, strict=True):
                ax.bar(class_names, table[position], bottom=bottom, color=color, label=position)
                bottom += table[position].to_numpy()
            ax.set_ylim(0, 1)
            ax.set_title(recipe, color=recipe_color(recipe, recipes), fontweight="bold")
            ax.set_ylabel("share of the class")
            ax.grid(axis="x", visible=False)
            ax.tick_params(axis="x", rotation=60 if len(class_names) > 6 else 0, labelsize=8)
        for ax in axes.ravel()[len(present) :]:
            ax.axis("off")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, title="exits at", loc="center left",
                   bbox_to_anchor=(1.0, 0.5), frameon=False)  # fmt: skip
        fig.suptitle(title)
        fig.tight_layout()
    return fig
