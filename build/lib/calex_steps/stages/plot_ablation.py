"""Stage `plot_ablation`: the 2×2 alignment × KD grid of accuracy loss at FR 0.4 and 0.6.

    python -m calex_steps.stages.plot_ablation --sweeps results/D/B/*/seed*/sweep.csv \
        --settings JSON --out-png ablation.png --out-pdf ablation.pdf
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from calex_steps.reporting import tables
from calex_steps.reporting.figures.ablation import ABLATION_FRS, plot_ablation
from calex_steps.reporting.figures.runs import check_settings, figure_stage, seeds_note, where
from calex_steps.reporting.figures.style import save_figure


def run_plot_ablation(sweeps: Sequence[Path], settings: dict, out_png: Path, out_pdf: Path) -> None:
    """The alignment × KD grid at FR 0.4 and 0.6."""
    check_settings(settings)
    frame = tables.read_sweeps(sweeps)
    losses = tables.summarise_loss(tables.loss_per_seed(frame, ABLATION_FRS))
    title = f"Ablation, alignment × KD: {where(sweeps)} ({seeds_note(frame)})"
    fig = plot_ablation(losses, ABLATION_FRS, title)
    save_figure(fig, out_png, out_pdf)


build_parser, main = figure_stage("ablation", __doc__, run_plot_ablation, "sweeps")

if __name__ == "__main__":
    raise SystemExit(main())
