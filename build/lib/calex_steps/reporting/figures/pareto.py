"""The Pareto frontier: accuracy against FLOPs reduction, one curve per recipe (SPEC section 10)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from calex_steps.reporting.figures.style import ACCURACY_FLOOR, recipe_color, style


def pareto_points(sweeps: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of FR and accuracy per (recipe, margin)."""
    grouped = sweeps.groupby(["recipe", "margin"], sort=False)
    out = grouped.agg(
        fr_mean=("fr", "mean"),
        fr_std=("fr", "std"),
        acc_mean=("accuracy", "mean"),
        acc_std=("accuracy", "std"),
        seeds=("seed", "nunique"),
    )
    return out.reset_index()


def _split_at_floor(x: np.ndarray, y: np.ndarray, floor: float) -> list[tuple[list, list, bool]]:
    """Cut a polyline where it crosses ``floor``; each piece is (xs, ys, above_floor)."""
    pieces: list[tuple[list, list, bool]] = []
    for i in range(len(x) - 1):
        (x0, x1), (y0, y1) = x[i : i + 2], y[i : i + 2]
        points = [(x0, y0)]
        if (y0 - floor) * (y1 - floor) < 0:  # strictly crosses: add the crossing point
            t = (floor - y0) / (y1 - y0)
            points.append((x0 + t * (x1 - x0), floor))
        points.append((x1, y1))
        for (ax_, ay), (bx, by) in zip(points[:-1], points[1:], strict=True):
            above = min(ay, by) >= floor
            if pieces and pieces[-1][2] == above:
                pieces[-1][0].append(bx)
                pieces[-1][1].append(by)
            else:
                pieces.append(([ax_, bx], [ay, by], above))
    return pieces


def plot_pareto(
    points: pd.DataFrame,
    backbone_acc: float,
    recipes: Sequence[str],
    title: str,
    floor: float = ACCURACY_FLOOR,
) -> plt.Figure:
    """FR–accuracy curves, one per recipe, markers at the margins, ±1 std band over seeds.

    Args:
        points: columns ``recipe, margin, fr_mean, fr_std, acc_mean, acc_std, seeds``.
        backbone_acc: the backbone's accuracy, drawn as the anchor at FR 0.
        recipes: recipes to draw, in legend order (those without points are skipped).
        title: figure title.
        floor: accuracies below it are shaded and their curve segments dotted.
    """
    with style():
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        lows = [backbone_acc]
        for recipe in recipes:
            run = points[points["recipe"] == recipe].sort_values("fr_mean")
            if run.empty:
                continue
            color = recipe_color(recipe, recipes)
            x = np.r_[0.0, run["fr_mean"].to_numpy()]
            y = np.r_[backbone_acc, run["acc_mean"].to_numpy()]
            for xs, ys, above in _split_at_floor(x, y, floor):
                ax.plot(xs, ys, color=color, lw=1.8, ls="-" if above else ":")
            ax.plot(x[1:], y[1:], "o", color=color, ms=4.5, label=recipe)
            std = run["acc_std"].fillna(0.0).to_numpy()
            if (run["seeds"] > 1).any():
                ax.fill_between(x[1:], y[1:] - std, y[1:] + std, color=color, alpha=0.15, lw=0)
            lows.append(float((y[1:] - std).min()))
        ax.plot([0.0], [backbone_acc], "*", color="black", ms=11, label="backbone", zorder=5)
        ax.axhline(backbone_acc, color="0.4", lw=0.8, ls="--")
        low, high = min(lows), backbone_acc
        pad = 0.08 * max(high - low, 0.02)
        ax.set_ylim(low - pad, high + pad)
        ax.set_xlim(left=-0.02)
        if floor > low - pad:
            ax.axhspan(low - pad, floor, color="0.5", alpha=0.13, lw=0)
            ax.text(0.01, floor, f" accuracy < {floor:.2f}", transform=ax.get_yaxis_transform(),
                    ha="left", va="top", fontsize=8, color="0.3")  # fmt: skip
        ax.set_xlabel("FLOPs reduction (FR)")
        ax.set_ylabel("test accuracy")
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        fig.tight_layout()
    return fig
