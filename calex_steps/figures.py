"""Plotting of the comparison figures (SPEC section 10): tidy frames in, Figures out.

Every function here draws; none reads result files (``make_figures`` does).
One palette map gives each recipe the same colour in every figure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
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
_SPARE_COLORS = ("#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31")
EXIT_PALETTE = "crest"  # sequential colours for exit positions B1..BL, backbone
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


@contextlib.contextmanager
def _style() -> Iterator[None]:
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
    with _style():
        fig, ax = plt.subplots(figsize=(6, 1.8))
        ax.axis("off")
        ax.set_title(title)
        ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig


# ---- Pareto ------------------------------------------------------------------


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
    with _style():
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


# ---- ablation ----------------------------------------------------------------

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
    with _style():
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


# ---- grouped per-position statistics (calibration, shift) ---------------------


def _grouped_bars(ax, frame: pd.DataFrame, column: str, positions: Sequence[str], recipes) -> None:
    """Bars of ``column`` (mean, with std whiskers) per position, one colour per recipe."""
    present = [r for r in recipes if r in set(frame["recipe"])]
    width = 0.8 / max(len(present), 1)
    for i, recipe in enumerate(present):
        rows = frame[frame["recipe"] == recipe].set_index("position")
        mean = rows[f"{column}_mean"].reindex(positions).to_numpy(dtype=float)
        std = rows[f"{column}_std"].reindex(positions).to_numpy(dtype=float)
        count = rows["n_mean"].reindex(positions).fillna(0).to_numpy(dtype=float)
        x = np.arange(len(positions)) - 0.4 + width * (i + 0.5)
        color = recipe_color(recipe, recipes)
        yerr = None if np.isnan(std).all() else np.nan_to_num(std)  # no whiskers for one seed
        ax.bar(x, mean, width, yerr=yerr, color=color, label=recipe, capsize=2, ecolor="0.3")
        for xi, m, n in zip(x, mean, count, strict=True):
            # The number of samples behind each bar: an ECE over a handful means little.
            label = "n/a" if not np.isfinite(m) else f"{n:.0f}"
            top = m if np.isfinite(m) else 0.0
            ax.text(xi, top, label, ha="center", va="bottom", fontsize=6, color="0.25")
    ax.set_xticks(np.arange(len(positions)), positions)


def plot_calibration(
    ece: pd.DataFrame, panels: Sequence[tuple[float, str]], recipes, title: str
) -> plt.Figure:
    """Exit-conditional ECE per branch, one panel per margin, bars per recipe.

    Args:
        ece: columns ``margin, recipe, position, ece_mean, ece_std, n_mean`` (n:
            exits at that branch, printed above each bar).
        panels: (margin used, panel title) pairs.
        recipes: legend order.
        title: figure title.
    """
    positions = sorted(ece["position"].unique(), key=lambda p: int(p[1:]))
    top = np.nanmax(ece["ece_mean"] + ece["ece_std"].fillna(0)) if len(ece) else 0.1
    with _style():
        fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.6), sharey=True)
        for ax, (margin, panel_title) in zip(np.atleast_1d(axes), panels, strict=True):
            _grouped_bars(ax, ece[ece["margin"] == margin], "ece", positions, recipes)
            ax.set_title(panel_title)
            ax.set_xlabel("exit branch")
            ax.set_ylim(0, max(float(top) * 1.15, 0.05))
        np.atleast_1d(axes)[0].set_ylabel("ECE of the samples exiting there")
        handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 7),
                   bbox_to_anchor=(0.5, 0.0), frameon=False)  # fmt: skip
        fig.suptitle(title)
        fig.tight_layout()
    return fig


SHIFT_PANELS = (
    ("kl", "KL(full ‖ survivors) [nats]"),
    ("gini", "Gini coefficient of survivors"),
    ("top3", "top-3 class share of survivors"),
)


def plot_shift(
    shift: pd.DataFrame, positions: Sequence[str], recipes, num_classes: int, title: str
) -> plt.Figure:
    """Class-distribution shift of the samples reaching each exit, three statistics.

    Args:
        shift: columns ``recipe, position`` and ``{kl,gini,top3}_{mean,std}``.
        positions: exit positions in cascade order (B1.., backbone).
        recipes: legend order.
        num_classes: for the uniform reference of the top-3 share (3/C).
        title: figure title.
    """
    present = [r for r in recipes if r in set(shift["recipe"])]
    x = np.arange(len(positions))
    with _style():
        fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.7))
        for ax, (stat, label) in zip(axes, SHIFT_PANELS, strict=True):
            for i, recipe in enumerate(present):
                rows = shift[shift["recipe"] == recipe].set_index("position").reindex(positions)
                offset = (i - (len(present) - 1) / 2) * 0.04  # keep whiskers apart
                std = rows[f"{stat}_std"]
                ax.errorbar(x + offset, rows[f"{stat}_mean"],
                            yerr=None if std.isna().all() else std.fillna(0),
                            color=recipe_color(recipe, recipes), marker="o", ms=4, capsize=2,
                            label=recipe)  # fmt: skip
            reference = {"kl": 0.0, "gini": 0.0, "top3": min(3 / num_classes, 1.0)}[stat]
            ax.axhline(reference, color="0.4", ls="--", lw=0.8)
            ax.set_xticks(x, positions)
            ax.set_xlabel("samples reaching")
            ax.set_title(label, fontsize=10)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 7),
                   bbox_to_anchor=(0.5, 0.0), frameon=False)  # fmt: skip
        fig.suptitle(title)
        fig.tight_layout()
    return fig


# ---- sample flow ---------------------------------------------------------------


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
    with _style():
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


# ---- exemplars -------------------------------------------------------------------


def plot_exemplars(
    images: Sequence[Sequence[dict | None]], column_groups: Sequence[str], title: str
) -> plt.Figure:
    """A grid of exit exemplars: one row per branch, column groups side by side.

    Args:
        images: rows (branches) of cells; each cell None (nothing to show) or a
            dict with ``image`` (H×W×3 uint8), ``caption`` and ``row_label``.
        column_groups: titles of the equal-width column groups, left to right.
        title: figure title.
    """
    n_rows, n_cols = len(images), max(len(r) for r in images)
    per_group = n_cols // max(len(column_groups), 1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.45 * n_cols, 1.75 * n_rows + 0.7),
                             squeeze=False)  # fmt: skip
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
        label = next((cell["row_label"] for cell in row if cell), f"branch {r + 1}")
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
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
