"""Stage `plot_pareto`: the Pareto frontier of every recipe of one (dataset, backbone).

    python -m calex_steps.stages.plot_pareto --sweeps results/D/B/*/seed*/sweep.csv \
        --settings JSON --out-png pareto.png --out-pdf pareto.pdf
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from calex_steps.reporting import tables
from calex_steps.reporting.figures.pareto import pareto_points, plot_pareto
from calex_steps.reporting.figures.runs import check_settings, figure_stage, seeds_note, where
from calex_steps.reporting.figures.style import save_figure


def run_plot_pareto(sweeps: Sequence[Path], settings: dict, out_png: Path, out_pdf: Path) -> None:
    """Pareto frontier of every recipe of one (dataset, backbone)."""
    settings = check_settings(settings)
    frame = tables.read_sweeps(sweeps)
    points = pareto_points(frame)
    title = f"Pareto frontier: {where(sweeps)} ({seeds_note(frame)})"
    backbone_acc = float(frame["backbone_accuracy"].mean())
    fig = plot_pareto(points, backbone_acc, settings["recipes"], title)
    save_figure(fig, out_png, out_pdf)


build_parser, main = figure_stage("pareto", __doc__, run_plot_pareto, "sweeps")

if __name__ == "__main__":
    raise SystemExit(main())
