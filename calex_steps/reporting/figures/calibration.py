"""Exit-conditional calibration: ECE of the samples a branch releases (docs/results.md#figures)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from calex_steps.reporting import metrics
from calex_steps.reporting.figures.runs import exit_rows, exits_per_recipe, margin_row, mean_std
from calex_steps.reporting.figures.style import percent, recipe_color, style

ECE_MARGINS = (0.05, 0.2, 0.4)


def ece_table(runs: Sequence[dict], margins: Sequence[float]) -> pd.DataFrame:
    """Exit-conditional ECE of every branch of every run at each margin.

    Only the samples that exited at branch l count; the bins span the
    branch's lowest threshold to 1.0; correctness is against ground truth.

    Returns:
        columns ``margin``, ``recipe``, ``exits`` (the recipe's number of branch
        exits L), ``exit`` (1..L), ``position`` (B1..BL), ``cost`` (the exit's
        share of the backbone's MACs) and ``{ece,n}_{mean,std}`` over seeds.
    """
    counts_of = exits_per_recipe(runs)
    rows = []
    for run in runs:
        for margin in margins:
            row = margin_row(run, margin)
            thresholds = run["thresholds"][f"m{margin:g}"]  # (L, C)
            for number, name, cost in exit_rows(run)[:-1]:
                b = number - 1
                exited = run["exit_branch"][row] == b  # (N,)
                conf = run["conf"][b][exited]
                correct = run["pred"][b][exited] == run["labels"][exited]
                low = min(float(thresholds[b].min()), 1.0 - 1e-6)
                ece = metrics.expected_calibration_error(conf, correct, low)
                rows.append((margin, run["recipe"], counts_of[run["recipe"]], number, name, cost,
                             run["seed"], ece, conf.size))  # fmt: skip
    columns = ["margin", "recipe", "exits", "exit", "position", "cost", "seed", "ece", "n"]
    frame = pd.DataFrame(rows, columns=columns)
    keys = ["margin", "recipe", "exits", "exit", "position"]
    stats = mean_std(frame, keys, ["ece", "n"])
    cost = frame.groupby(keys, sort=False)["cost"].mean().reset_index()
    return cost.merge(stats, on=keys, how="left", validate="one_to_one")


def _grouped_bars(ax, frame: pd.DataFrame, column: str, exits: int, recipes) -> None:
    """Bars of ``column`` (mean, with std whiskers) per exit 1..``exits``, one colour per
    recipe; the number of samples behind each bar above it ("n/a": none exited there)."""
    present = [r for r in recipes if r in set(frame["recipe"])]
    width = 0.8 / max(len(present), 1)
    numbers = np.arange(1, exits + 1)
    for i, recipe in enumerate(present):
        rows = frame[frame["recipe"] == recipe].set_index("exit")
        mean = rows[f"{column}_mean"].reindex(numbers).to_numpy(dtype=float)
        std = rows[f"{column}_std"].reindex(numbers).to_numpy(dtype=float)
        count = rows["n_mean"].reindex(numbers).fillna(0).to_numpy(dtype=float)
        x = numbers - 1 - 0.4 + width * (i + 0.5)
        color = recipe_color(recipe, recipes)
        yerr = None if np.isnan(std).all() else np.nan_to_num(std)  # no whiskers for one seed
        ax.bar(x, mean, width, yerr=yerr, color=color, label=recipe, capsize=2, ecolor="0.3")
        for xi, m, sd, n in zip(x, mean, np.nan_to_num(std), count, strict=True):
            # The number of samples behind each bar (above its whisker): an ECE over a
            # handful means little.
            label = "n/a" if not np.isfinite(m) else f"{n:.0f}"
            top = m + sd if np.isfinite(m) else 0.0
            ax.text(xi, top, label, ha="center", va="bottom", fontsize=6, color="0.25")
    ax.set_xticks(numbers - 1, exit_ticks(frame, exits))


def exit_ticks(frame: pd.DataFrame, exits: int) -> list[str]:
    """B1..BL, with the exit's depth when every recipe of ``frame`` has it at one depth
    (within 2 points of the MACs): recipes of one row may place their exits differently."""
    spread = frame.groupby("exit")["cost"].agg(["min", "max", "mean"])
    ticks = []
    for number in range(1, exits + 1):
        name = f"B{number}"
        if number in spread.index and spread.loc[number, "max"] - spread.loc[number, "min"] <= 0.02:
            name += f"\n{percent(spread.loc[number, 'mean'])}"
        ticks.append(name)
    return ticks


def plot_calibration(
    ece: pd.DataFrame, panels: Sequence[tuple[float, str]], recipes, title: str
) -> plt.Figure:
    """Exit-conditional ECE per branch, one column per margin, bars per recipe.

    Recipes with different numbers of exits are drawn in separate rows (one per
    number of exits, fewest first), so that bars side by side are the same exit
    of cascades of one length.

    Args:
        ece: ``ece_table`` output (n: exits at that branch, printed above each bar).
        panels: (margin used, panel title) pairs.
        recipes: legend order.
        title: figure title.
    """
    counts = sorted(ece["exits"].unique().tolist()) or [1]
    top = np.nanmax(ece["ece_mean"] + ece["ece_std"].fillna(0)) if len(ece) else 0.1
    widest = max(counts)
    with style():
        fig, axes = plt.subplots(len(counts), len(panels), sharey=True, squeeze=False,
                                 figsize=(max(4.0, 0.9 + 0.55 * widest) * len(panels),
                                          3.0 + 2.6 * (len(counts) - 1)))  # fmt: skip
        for r, (row, exits) in enumerate(zip(axes, counts, strict=True)):
            group = ece[ece["exits"] == exits]
            for ax, (margin, panel_title) in zip(row, panels, strict=True):
                _grouped_bars(ax, group[group["margin"] == margin], "ece", exits, recipes)
                if r == 0:
                    ax.set_title(panel_title)
                ax.set_xlabel("exit branch")
                ax.set_ylim(0, max(float(top) * 1.15, 0.05))
            label = "ECE of the samples exiting there"
            if len(counts) > 1:
                label = f"recipes with {exits} exit{'s' * (exits != 1)}\n{label}"
            row[0].set_ylabel(label)
        drawn = {}
        for ax in axes.ravel():
            drawn |= dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
        labels = [r for r in recipes if r in drawn]
        fig.legend([drawn[x] for x in labels], labels, loc="upper center",
                   ncol=min(len(labels), 7), bbox_to_anchor=(0.5, 0.0), frameon=False)  # fmt: skip
        fig.suptitle(title)
        fig.tight_layout()
    return fig
