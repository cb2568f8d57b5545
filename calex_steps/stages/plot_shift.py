"""Stage `plot_shift`: the class-distribution shift of the samples reaching each exit at m = 0.2.

    python -m calex_steps.stages.plot_shift --exits results/D/B/*/seed*/exits.npz \
        --prepared results/D/prepared.h5 \
        --settings JSON --out-png shift.png --out-pdf shift.pdf
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from calex_steps.data.prepared import read_class_names
from calex_steps.reporting.figures.runs import (
    figure_stage,
    runs_at_margin,
    where,
)
from calex_steps.reporting.figures.shift import SHIFT_MARGIN, plot_shift, shift_table
from calex_steps.reporting.figures.style import save_figure


def run_plot_shift(
    exits: Sequence[Path], prepared: Path, settings: dict, out_png: Path, out_pdf: Path
) -> None:
    """KL, Gini and top-3 share of the samples reaching each exit at m = 0.2."""
    settings, runs, margin, note = runs_at_margin(exits, settings, SHIFT_MARGIN)
    num_classes = len(read_class_names(prepared))
    shift = shift_table(runs, margin, num_classes)
    title = f"Covariate shift at m = {margin:g}{note}: {where(exits)}"
    fig = plot_shift(shift, settings["recipes"], num_classes, title)
    save_figure(fig, out_png, out_pdf)


build_parser, main = figure_stage("shift", __doc__, run_plot_shift, "exits", "prepared")

if __name__ == "__main__":
    raise SystemExit(main())
