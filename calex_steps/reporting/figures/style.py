"""The house style of every figure: one colour per recipe, exit labels, saving as PNG and PDF.

Each figure family is a module beside this one: a tidy-table builder (pure
pandas) and a plotting function (tidy frame in, Figure out); the plot stages
(``calex_steps.stages.plot_*``) read the run files and call them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from calex_steps.io import atomic_path  # noqa: E402

# One colour per recipe, fixed: the same recipe looks the same in every figure.
RECIPE_COLORS = {
    "calexnet": "#d62728",
    "noalign": "#1f77b4",
    "align_only": "#ff7f0e",
    "kd_only": "#2ca02c",
    "pteenet": "#9467bd",
    "ztw": "#8c564b",
    "boostnet": "#e377c2",
}
# Spares for other recipes, in order of appearance: enough for a study that crosses heads,
# exit placements and recipes (two dozen more) before a colour repeats.
_SPARE_COLORS = ("#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31",
                 "#843c39", "#7b4173", "#6b6ecf", "#e7ba52", "#3182bd", "#31a354",
                 "#9edae5", "#dbdb8d", "#c5b0d5", "#ff9896", "#98df8a", "#ffbb78",
                 "#aec7e8", "#c49c94", "#f7b6d2", "#ad494a", "#a55194", "#5254a3")  # fmt: skip
EXIT_PALETTE = "YlGnBu"  # sequential colours for the branch exits, by depth
BACKBONE_COLOR = "#2b2d42"  # the backbone exit, darker than any branch
ACCURACY_FLOOR = 0.70  # below it an operating point is shaded as not useful


def recipe_color(recipe: str, recipes: Sequence[str] = ()) -> str:
    """The fixed colour of a known recipe; others take spare colours by position in ``recipes``."""
    if recipe in RECIPE_COLORS:
        return RECIPE_COLORS[recipe]
    unknown = [r for r in recipes if r not in RECIPE_COLORS] or [recipe]
    index = unknown.index(recipe) if recipe in unknown else 0
    return _SPARE_COLORS[index % len(_SPARE_COLORS)]


def exit_labels(num_branches: int) -> list[str]:
    """Names of the exit positions: B1..BL then the backbone."""
    return [f"B{b}" for b in range(1, num_branches + 1)] + ["backbone"]


def exit_cmap() -> matplotlib.colors.Colormap:
    """Branch-exit colours by depth 0..1: the upper part of ``EXIT_PALETTE``, dark enough
    at the first exit to show on white and distinct from the backbone's colour at the
    deepest."""
    colors = matplotlib.colormaps[EXIT_PALETTE](np.linspace(0.35, 0.9, 78))
    return matplotlib.colors.ListedColormap(colors, name="calex_exits")


def exit_color(cost: float, backbone: bool = False) -> tuple:
    """The colour of an exit, from its depth: the share of the backbone's MACs a sample
    leaving there has paid (0..1). Exits at one depth look alike in every recipe, whatever
    number of exits the recipes have; the backbone has its own colour."""
    if backbone:
        return matplotlib.colors.to_rgba(BACKBONE_COLOR)
    return exit_cmap()(min(max(float(cost), 0.0), 1.0))


def percent(share: float) -> str:
    """0.153 -> '15 %' (an exit's depth, as a share of the backbone's MACs)."""
    return f"{100 * share:.0f} %"


# A white grid style with light axes and ticks in dark grey, at a 10-point font.
HOUSE_STYLE = {
    "axes.axisbelow": True, "axes.edgecolor": ".8", "axes.grid": True,
    "axes.labelcolor": ".15", "axes.labelsize": 10.2, "axes.linewidth": 1.25,
    "axes.titlesize": 10.2, "font.size": 10.2, "grid.color": ".8", "grid.linewidth": 1,
    "legend.fontsize": 9.35, "legend.title_fontsize": 10.2, "lines.solid_capstyle": "round",
    "patch.edgecolor": "w", "patch.force_edgecolor": True, "text.color": ".15",
    "xtick.bottom": False, "xtick.color": ".15", "xtick.labelsize": 9.35,
    "xtick.major.size": 6, "xtick.major.width": 1.25, "xtick.minor.size": 4,
    "xtick.minor.width": 1, "ytick.color": ".15", "ytick.labelsize": 9.35,
    "ytick.left": False, "ytick.major.size": 6, "ytick.major.width": 1.25,
    "ytick.minor.size": 4, "ytick.minor.width": 1,
}  # fmt: skip


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The house style, applied locally so that importing this module changes nothing."""
    with matplotlib.rc_context(HOUSE_STYLE):
        yield


def save_figure(fig: plt.Figure, png: Path, pdf: Path) -> None:
    """Write ``fig`` as PNG (150 dpi) and PDF atomically, then close it."""
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight", metadata={"Software": None})
    with atomic_path(pdf) as tmp:
        fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)


def note_figure(message: str, title: str) -> plt.Figure:
    """A small figure stating why a plot has no data (e.g. no correct exits at all)."""
    with style():
        fig, ax = plt.subplots(figsize=(6, 1.8))
        ax.axis("off")
        ax.set_title(title)
        ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig
