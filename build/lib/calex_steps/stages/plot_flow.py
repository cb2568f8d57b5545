"""Stage `plot_flow`: per class, where its test samples leave the cascade at m = 0.2.

    python -m calex_steps.stages.plot_flow --exits results/D/B/*/seed*/exits.npz \
        --prepared results/D/prepared.h5 \
        --settings JSON --out-png flow.png --out-pdf flow.pdf
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from calex_steps.data.prepared import read_class_names
from calex_steps.reporting.figures.flow import flow_table, plot_flow
from calex_steps.reporting.figures.runs import (
    figure_stage,
    runs_at_margin,
    where,
)
from calex_steps.reporting.figures.shift import SHIFT_MARGIN
from calex_steps.reporting.figures.style import save_figure


def run_plot_flow(
    exits: Sequence[Path], prepared: Path, settings: dict, out_png: Path, out_pdf: Path
) -> None:
    """Per class, where its test samples leave the cascade at m = 0.2."""
    settings, runs, margin, note = runs_at_margin(exits, settings, SHIFT_MARGIN)
    names = read_class_names(prepared)
    flow = flow_table(runs, margin, len(names))
    title = f"Sample flow per class at m = {margin:g}{note}: {where(exits)}"
    fig = plot_flow(flow, settings["recipes"], names, title)
    save_figure(fig, out_png, out_pdf)


build_parser, main = figure_stage("flow", __doc__, run_plot_flow, "exits", "prepared")

if __name__ == "__main__":
    raise SystemExit(main())
