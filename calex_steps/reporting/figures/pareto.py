"""The Pareto frontier: accuracy against FR, one curve per recipe (docs/results.md#figures)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from calex_steps.reporting.figures.style import ACCURACY_FLOOR, recipe_color, style


def pareto_points(frontiers: pd.DataFrame, paper_margins: Sequence[float]) -> pd.DataFrame:
    """Mean and std over runs (seeds × splits) of FR, LR and accuracy per (recipe, margin)
    of the dense frontier; ``paper`` marks the margins of the paper's grid."""
    grouped = frontiers.groupby(["recipe", "margin"], sort=False)
    out = grouped.agg(
        fr_mean=("fr", "mean"),
        fr_std=("fr", "std"),
        lr_mean=("lr", "mean"),
        lr_std=("lr", "std"),
        acc_mean=("accuracy", "mean"),
        acc_std=("accuracy", "std"),
        runs=("accuracy", "size"),
    ).reset_index()
    paper = np.asarray(paper_margins, dtype=np.float64)
    hits = np.isclose(out["margin"].to_numpy()[:, None], paper[None], rtol=0, atol=1e-9)
    return out.assign(paper=hits.any(axis=1))


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


def _draw(ax, points, axis: str, backbone_acc: float, recipes, floor: float) -> float:
    """One panel: a curve per recipe through its frontier margins (accuracy against the
    ``axis`` reduction, ``fr`` or ``lr``), markers at the paper's margins, a ±1 std band.
    Returns the lowest accuracy drawn."""
    low = backbone_acc
    for recipe in recipes:
        run = points[points["recipe"] == recipe].sort_values(f"{axis}_mean")
        if run.empty:
            continue
        color = recipe_color(recipe, recipes)
        x = np.r_[0.0, run[f"{axis}_mean"].to_numpy()]
        y = np.r_[backbone_acc, run["acc_mean"].to_numpy()]
        for xs, ys, above in _split_at_floor(x, y, floor):
            ax.plot(xs, ys, color=color, lw=1.8, ls="-" if above else ":")
        paper = run["paper"].to_numpy()
        ax.plot(x[1:][paper], y[1:][paper], "o", color=color, ms=4.5, label=recipe)
        std = run["acc_std"].fillna(0.0).to_numpy()
        if (run["runs"] > 1).any():
            ax.fill_between(x[1:], y[1:] - std, y[1:] + std, color=color, alpha=0.15, lw=0)
        low = min(low, float((y[1:] - std).min()))
    ax.plot([0.0], [backbone_acc], "*", color="black", ms=11, label="backbone", zorder=5)
    ax.axhline(backbone_acc, color="0.4", lw=0.8, ls="--")
    ax.set_xlim(left=-0.02)
    ax.set_ylabel("test accuracy")
    return low


def plot_pareto(
    points: pd.DataFrame,
    backbone_acc: float,
    recipes: Sequence[str],
    title: str,
    lr_condition: str | None = None,
    floor: float = ACCURACY_FLOOR,
) -> plt.Figure:
    """Accuracy against FR (and, when latency was measured, against LR), one curve per
    recipe through the dense frontier, markers at the paper's margins.

    Args:
        points: ``pareto_points`` output.
        backbone_acc: the backbone's accuracy, drawn as the anchor at reduction 0.
        recipes: recipes to draw, in legend order (those without points are skipped).
        title: figure title.
        lr_condition: what the latency was measured on (the LR panel's title).
        floor: accuracies below it are shaded and their curve segments dotted.
    """
    axes_wanted = ["fr"] + (["lr"] if np.isfinite(points["lr_mean"]).all() else [])
    with style():
        fig, axes = plt.subplots(1, len(axes_wanted), figsize=(6.4 * len(axes_wanted), 4.6),
                                 squeeze=False)  # fmt: skip
        lows = [_draw(ax, points, a, backbone_acc, recipes, floor) for ax, a in
                zip(axes[0], axes_wanted, strict=True)]  # fmt: skip
        low, high = min(lows), backbone_acc
        pad = 0.08 * max(high - low, 0.02)
        for ax in axes[0]:
            ax.set_ylim(low - pad, high + pad)
            if floor > low - pad:
                ax.axhspan(low - pad, floor, color="0.5", alpha=0.13, lw=0)
                ax.text(0.01, floor, f" accuracy < {floor:.2f}", transform=ax.get_yaxis_transform(),
                        ha="left", va="top", fontsize=8, color="0.3")  # fmt: skip
        axes[0][0].set_xlabel("FLOPs reduction (FR)")
        axes[0][0].set_title("FLOPs" if len(axes_wanted) > 1 else "FLOPs (latency not measured)")
        if len(axes_wanted) > 1:
            axes[0][1].set_xlabel("latency reduction (LR), predicted from measured segment times")
            axes[0][1].set_title(f"latency: {lr_condition or 'device not recorded'}", fontsize=9)
        fig.suptitle(title)
        axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        fig.tight_layout()
    return fig
