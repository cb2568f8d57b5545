"""The 2×2 ablation (alignment × KD): accuracy loss at fixed FRs (SPEC section 10)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from calex_steps.reporting.figures.style import style

ABLATION_FRS = (0.4, 0.6)

# Cell (row, column) of each ablation recipe: rows alignment no/yes, columns KD no/yes.
ABLATION_CELLS = {"noalign": (0, 0), "kd_only": (0, 1), "align_only": (1, 0), "calexnet": (1, 1)}


def plot_ablation(losses: pd.DataFrame, targets: Sequence[float], title: str) -> plt.Figure:
    """The 2×2 alignment × KD grid of accuracy loss, one panel per target FR.

    Args:
        losses: columns ``recipe, fr_target, mean, std, seeds``; a recipe of
            ``ABLATION_CELLS`` absent from it is labelled "not run".
        targets: FRs, one panel each.
        title: figure title.
    """
    values = losses.set_index(["recipe", "fr_target"])
    finite = losses["mean"][np.isfinite(losses["mean"])]
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
                if key in values.index:
                    mean, std = values.loc[key, "mean"], values.loc[key, "std"]
                    grid[r, c] = mean
                    text = "—  (FR not reached)" if not np.isfinite(mean) else f"{mean:.2f}"
                    if np.isfinite(mean) and np.isfinite(std):
                        text += f" ± {std:.2f}"
                    color = "black"
                ax.text(c, r, f"{recipe}\n{text}", ha="center", va="center", color=color)
            ax.imshow(np.ma.masked_invalid(grid), cmap="Reds", vmin=vmin, vmax=vmax)
            ax.set_facecolor("0.93")
            ax.grid(False)
            ax.set_xticks([0, 1], ["no KD", "KD"])
            ax.set_yticks([0, 1], ["no alignment", "alignment"])
            ax.set_title(f"loss (points) at FR {target:g}")
        fig.suptitle(title)
        fig.tight_layout()
    return fig
