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
import seaborn as sns  # noqa: E402

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
EXIT_PALETTE = "crest"  # sequential colours for the branch exits, by depth
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
    """Branch-exit colours by depth 0..1: the middle of ``EXIT_PALETTE``, light enough at
    the first exit and distinct from the backbone's colour at the deepest."""
    colors = sns.color_palette(EXIT_PALETTE, 100)[8:86]
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


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The house style, applied locally so that importing this module changes nothing."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
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
