"""Stage `plot_calibration`: exit-conditional ECE per branch at margins 0.05, 0.2 and 0.4.

    python -m calex_steps.stages.plot_calibration --exits results/D/B/*/seed*/exits.npz \
        --settings JSON --out-png calibration.png --out-pdf calibration.pdf
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from calex_steps.reporting.figures.calibration import ECE_MARGINS, ece_table, plot_calibration
from calex_steps.reporting.figures.runs import (
    check_settings,
    figure_stage,
    load_run,
    pick_margin,
    where,
)
from calex_steps.reporting.figures.style import save_figure


def run_plot_calibration(
    exits: Sequence[Path], settings: dict, out_png: Path, out_pdf: Path
) -> None:
    """Exit-conditional ECE per branch at margins 0.05, 0.2 and 0.4."""
    settings = check_settings(settings)
    runs = [load_run(p, settings["exit_signals"]) for p in exits]
    panels, used = [], []
    for wanted in ECE_MARGINS:
        margin, note = pick_margin(settings["margins"], wanted)
        panels.append((margin, f"m = {margin:g}{note}"))
        used.append(margin)
    ece = ece_table(runs, sorted(set(used)))
    title = f"Exit-conditional calibration: {where(exits)} ({len(runs)} runs)"
    fig = plot_calibration(ece, panels, settings["recipes"], title)
    save_figure(fig, out_png, out_pdf)


build_parser, main = figure_stage("calibration", __doc__, run_plot_calibration, "exits")

if __name__ == "__main__":
    raise SystemExit(main())
