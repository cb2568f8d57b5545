"""Exemplars: near-threshold and deep-above-threshold correct exits of each branch."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from calex_steps.errors import CalexError
from calex_steps.reporting.figures.runs import exit_rows, margin_row
from calex_steps.reporting.figures.style import percent

EXEMPLARS_PER_KIND = 4


def exemplar_cells(
    run: dict, images: np.ndarray, names: Sequence[str], margin: float, k: int
) -> list[list[dict | None]]:
    """Per branch, ``k`` correct exits nearest their threshold and ``k`` deepest above it.

    The slack of an exit is its confidence minus the threshold of its
    predicted class; near-threshold = smallest slack, deep = largest. One row
    per branch of the run, however many it has (``exemplar_row_labels`` names them).
    """
    row = margin_row(run, margin)
    thresholds = run["thresholds"][f"m{margin:g}"]  # (L, C)
    cells = []
    for b in range(run["num_branches"]):
        pred, conf = run["pred"][b], run["conf"][b]
        chosen = np.flatnonzero((run["exit_branch"][row] == b) & (pred == run["labels"]))
        slack = conf[chosen] - thresholds[b][pred[chosen]]
        order = chosen[np.argsort(slack, kind="stable")]
        # Few exits: split them between the two groups rather than showing one twice.
        n_near = min(k, -(-order.size // 2))
        near = list(order[:n_near])
        deep = list(order[::-1][: min(k, order.size - n_near)])
        cells_l = []
        for group in (near, deep):
            for j in range(k):
                if j >= len(group):
                    cells_l.append(None)
                    continue
                i = group[j]
                caption = f"{names[pred[i]]}\nR={conf[i]:.2f} T={thresholds[b][pred[i]]:.2f}"
                cells_l.append({"image": images[i], "caption": caption})
        cells.append(cells_l)
    return cells


def exemplar_row_labels(run: dict) -> list[str]:
    """'B2 (34 %)': each branch of a run with its depth (share of the backbone's MACs)."""
    return [f"{name} ({percent(cost)})" for _, name, cost in exit_rows(run)[:-1]]


def plot_exemplars(
    images: Sequence[Sequence[dict | None]],
    column_groups: Sequence[str],
    title: str,
    row_labels: Sequence[str] | None = None,
) -> plt.Figure:
    """A grid of exit exemplars: one row per branch (any number), column groups side by side.

    Args:
        images: rows (branches) of cells; each cell None (nothing to show) or a
            dict with ``image`` (H×W×3 uint8) and ``caption``.
        column_groups: titles of the equal-width column groups, left to right.
        title: figure title.
        row_labels: one per row (default B1, B2, …).
    """
    row_labels = list(row_labels or [f"B{r + 1}" for r in range(len(images))])
    if len(row_labels) != len(images):
        raise CalexError(f"{len(images)} rows of exemplars but {len(row_labels)} row labels")
    n_rows, n_cols = len(images), max(len(r) for r in images)
    per_group = n_cols // max(len(column_groups), 1)
    height = 1.75 * n_rows + 0.7
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.45 * n_cols, height), squeeze=False)
    for r, row in enumerate(images):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            cell = row[c] if c < len(row) else None
            if cell is None:
                ax.text(0.5, 0.5, "none", ha="center", va="center", color="0.5", fontsize=8)
                for spine in ax.spines.values():
                    spine.set_visible(False)
                continue
            ax.imshow(cell["image"], interpolation="nearest")
            ax.set_title(cell["caption"], fontsize=7)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.55 / height))  # 0.55 in for the title and headers
    # Group headers just above the tallest caption of the first row.
    fig.canvas.draw()
    tops = [ax.title.get_window_extent().y1 for ax in axes[0] if ax.get_title()]
    top_px = max(tops) if tops else axes[0, 0].get_window_extent().y1
    header = fig.transFigure.inverted().transform((0, top_px))[1] + 0.01
    for g, group in enumerate(column_groups):
        left = axes[0, g * per_group].get_position().x0
        right = axes[0, (g + 1) * per_group - 1].get_position().x1
        fig.text((left + right) / 2, header, group, ha="center", fontsize=9, fontweight="bold")
    return fig
