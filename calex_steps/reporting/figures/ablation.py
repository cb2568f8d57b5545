"""The 2×2 ablation (alignment × KD): accuracy loss at fixed FRs (docs/results.md#figures)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from calex_steps.reporting.figures.style import style
from calex_steps.reporting.tables import EXTRAPOLATED_MARK, cell_text

# Cell (row, column) of each ablation recipe: rows alignment no/yes, columns KD no/yes.
ABLATION_CELLS = {"noalign": (0, 0), "kd_only": (0, 1), "align_only": (1, 0), "calexnet": (1, 1)}


def plot_ablation(losses: pd.DataFrame, targets: Sequence[float], title: str) -> plt.Figure:
    """The 2×2 alignment × KD grid of accuracy loss, one panel per target FR.

    Args:
        losses: rows of the loss table (``recipe, fr_target, mean, ci_lo, ci_hi,
            status``); a recipe of ``ABLATION_CELLS`` absent from it is labelled
            "not run", a missing cell "FR not reached", an extrapolated one
            carries the dagger and is drawn without colour; an FR the table
            does not hold says so.
        targets: FRs, one panel each.
        title: figure title.
    """
    values = losses.set_index(["recipe", "fr_target"])
    finite = losses["mean"][np.isfinite(losses["mean"]) & (losses["status"] == "measured")]
    # A recipe may beat the backbone (negative loss): the scale starts at min(0, lowest).
    vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    vmax = max(float(finite.max()), vmin + 1.0) if finite.size else 1.0
    vmax = vmin + 1.6 * (vmax - vmin)  # keep the darkest cell light enough for black text
    with style():
        fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.9), squeeze=False)
        for ax, target in zip(axes[0], targets, strict=True):
            grid = np.full((2, 2), np.nan)
            for recipe, (r, c) in ABLATION_CELLS.items():
                key = (recipe, float(target))
                text, color = "not run", "0.45"
                if recipe in set(losses["recipe"]) and key not in values.index:
                    text = "FR not tabulated\n(report.fr_targets)"
                if key in values.index:
                    row = values.loc[key]
                    if row["status"] == "measured":
                        grid[r, c] = row["mean"]
                    text = cell_text(row["mean"], row["ci_lo"], row["ci_hi"], row["status"], 1)
                    if row["status"] == "missing":
                        text += "  (FR not reached)"
                    color = "black"
                ax.text(c, r, f"{recipe}\n{text}", ha="center", va="center", color=color)
            ax.imshow(np.ma.masked_invalid(grid), cmap="Reds", vmin=vmin, vmax=vmax)
            ax.set_facecolor("0.93")
            ax.grid(False)
            ax.set_xticks([0, 1], ["no KD", "KD"])
            ax.set_yticks([0, 1], ["no alignment", "alignment"])
            ax.set_title(f"loss (points) at FR {target:g}")
            ax.set_xlabel(f"{EXTRAPOLATED_MARK} extrapolated past the FR a run reached", fontsize=7)
        fig.suptitle(title)
        fig.tight_layout()
    return fig
