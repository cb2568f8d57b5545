"""Sample flow: per class, where its test samples leave the cascade (docs/results.md#figures).

Recipes of one study may have different numbers of exits: each panel stacks its
recipe's own exits, coloured by depth (the share of the backbone's MACs a sample
leaving there has paid), so that exits at one depth look alike across panels.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap

from calex_steps.reporting.figures.runs import exit_rows, exits_per_recipe, margin_row
from calex_steps.reporting.figures.style import (
    exit_color,
    percent,
    recipe_color,
    style,
)

FLOW_COLUMNS = ["recipe", "exits", "exit", "position", "cost", "class", "share"]


def flow_table(runs: Sequence[dict], margin: float, num_classes: int) -> pd.DataFrame:
    """Share of each class's test samples leaving at each exit of its recipe, mean over seeds.

    Returns:
        columns ``recipe``, ``exits`` (the recipe's number of branch exits L),
        ``exit`` (1..L+1, L+1 the backbone), ``position`` (B1..BL, backbone),
        ``cost`` (the exit's share of the backbone's MACs), ``class``, ``share``;
        rows of one (recipe, class) sum to 1 over its L+1 exits.
    """
    counts_of = exits_per_recipe(runs)
    rows = []
    for run in runs:
        exit_branch = run["exit_branch"][margin_row(run, margin)].astype(np.int64)
        slots = run["num_branches"] + 1
        counts = np.bincount(run["labels"] * slots + exit_branch, minlength=slots * num_classes)
        counts = counts.reshape(num_classes, slots)  # (C, L+1)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        for number, name, cost in exit_rows(run):
            for c in range(num_classes):
                rows.append((run["recipe"], counts_of[run["recipe"]], number, name, cost, c,
                             shares[c, number - 1]))  # fmt: skip
    frame = pd.DataFrame(rows, columns=FLOW_COLUMNS)
    keys = ["recipe", "exits", "exit", "position", "class"]
    return frame.groupby(keys, sort=False)[["cost", "share"]].mean().reset_index()[FLOW_COLUMNS]


def _exits_note(rows: pd.DataFrame) -> str:
    """'3 exits at 12, 35, 70 % of the MACs' for one recipe's rows of the flow table."""
    branch = rows[rows["position"] != "backbone"].drop_duplicates("exit").sort_values("exit")
    depths = ", ".join(f"{100 * c:.0f}" for c in branch["cost"])
    count = len(branch)
    return f"{count} exit{'s' * (count != 1)} at {depths} % of the MACs"


def plot_flow(
    flow: pd.DataFrame, recipes: Sequence[str], class_names: Sequence[str], title: str
) -> plt.Figure:
    """Per class, the share of its test samples leaving at each exit, one panel per recipe.

    Each panel stacks its recipe's own exits in cascade order, coloured by depth
    (the colour bar), the backbone last; its title names the exits' depths.

    Args:
        flow: ``flow_table`` output.
        recipes: panel order (recipes absent from ``flow`` are skipped).
        class_names: names by class index.
        title: figure title.
    """
    present = [r for r in recipes if r in set(flow["recipe"])]
    cols = min(len(present), 2)
    rows = -(-len(present) // cols)
    width = max(5.0, 0.32 * len(class_names) + 2.0)
    with style():
        fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 3.5 * rows), squeeze=False)
        for ax, recipe in zip(axes.ravel(), present, strict=False):
            part = flow[flow["recipe"] == recipe]
            table = part.pivot(index="class", columns="exit", values="share")
            table = table.reindex(index=range(len(class_names))).fillna(0.0)
            exits = part.drop_duplicates("exit").sort_values("exit")
            bottom = np.zeros(len(class_names))
            for number, name, cost in exits[["exit", "position", "cost"]].itertuples(index=False):
                color = exit_color(cost, backbone=name == "backbone")
                ax.bar(class_names, table[number], bottom=bottom, color=color, label=name,
                       edgecolor="white", linewidth=0.4)  # fmt: skip
                bottom += table[number].to_numpy()
            ax.set_ylim(0, 1)
            ax.set_title(f"{recipe}\n{_exits_note(part)}", color=recipe_color(recipe, recipes),
                         fontweight="bold", fontsize=9)  # fmt: skip
            ax.set_ylabel("share of the class")
            ax.grid(axis="x", visible=False)
            ax.tick_params(axis="x", rotation=60 if len(class_names) > 6 else 0, labelsize=8)
        for ax in axes.ravel()[len(present) :]:
            ax.axis("off")
        fig.suptitle(title)
        fig.tight_layout()
        _depth_legend(fig, axes)
    return fig


def _depth_legend(fig: plt.Figure, axes) -> None:
    """One colour bar right of the panels: branch-exit depth 0..100 %, the backbone on top."""
    steps = [exit_color(x) for x in np.linspace(0.0, 1.0, 100)]
    cmap = ListedColormap(steps + [exit_color(1.0, backbone=True)] * 20)
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0.0, 1.2))
    bar = fig.colorbar(mappable, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
    bar.set_label("exit depth (share of the MACs)")
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
    bar.set_ticks([*ticks, 1.12], labels=[*(percent(t) for t in ticks), "backbone"])
