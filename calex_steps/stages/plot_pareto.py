"""Stage `plot_pareto`: the Pareto frontier of every recipe of one (dataset, backbone).

    python -m calex_steps.stages.plot_pareto --frontiers results/D/B/*/seed*/split*/frontier.csv \
        [--segments results/D/B/latency/segments.json] \
        --settings JSON --out-png pareto.png --out-pdf pareto.pdf

Accuracy against FR along each recipe's dense frontier (mean over seeds and
splits; markers at the paper's margins), and against LR in a second panel
when the sweep predicted latencies (its title says what they were measured on).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from calex_steps.errors import CalexError
from calex_steps.reporting import runfiles
from calex_steps.reporting.figures.pareto import pareto_points, plot_pareto
from calex_steps.reporting.figures.runs import check_settings, figure_stage, where
from calex_steps.reporting.figures.style import save_figure


def run_plot_pareto(
    frontiers: Sequence[Path],
    settings: dict,
    out_png: Path,
    out_pdf: Path,
    segments: Sequence[Path] = (),
) -> None:
    """Pareto frontier of every recipe of one (dataset, backbone), FR and (measured) LR."""
    settings = check_settings(settings)
    if len(segments) > 1:
        raise CalexError(f"a Pareto figure shows one backbone; got {len(segments)} --segments")
    frame = runfiles.read_tables(frontiers)
    points = pareto_points(frame, settings["margins"])
    runs = frame.groupby(["seed", "split"]).ngroups
    title = f"Pareto frontier: {where(frontiers)} (mean over {runs} run{'s' * (runs > 1)})"
    condition = None
    if segments:
        condition = runfiles.latency_condition(segments[0], settings.get("lr_batch_size"))
    backbone_acc = float(frame["backbone_accuracy"].mean())
    fig = plot_pareto(points, backbone_acc, settings["recipes"], title, condition)
    save_figure(fig, out_png, out_pdf)


build_parser, main = figure_stage(
    "pareto", __doc__, run_plot_pareto, "frontiers", optional=("segments",)
)

if __name__ == "__main__":
    raise SystemExit(main())
