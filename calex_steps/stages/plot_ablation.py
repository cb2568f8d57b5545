"""Stage `plot_ablation`: the 2×2 alignment × KD grid of accuracy loss at FR 0.4 and 0.6.

    python -m calex_steps.stages.plot_ablation --tables results/tables/D/loss_at_fr.csv \
        --settings JSON --out-png ablation.png --out-pdf ablation.pdf

Drawn from the dataset's loss table (rows of the backbone named in the
settings), so each cell shows the table's estimate, interval and marks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from calex_steps.errors import CalexError
from calex_steps.reporting.figures.ablation import plot_ablation
from calex_steps.reporting.figures.runs import check_settings, figure_stage
from calex_steps.reporting.figures.style import save_figure
from calex_steps.reporting.tables import ABLATION_FRS

COLUMNS = {"dataset", "backbone", "recipe", "fr_target", "mean", "ci_lo", "ci_hi", "status", "runs"}


def run_plot_ablation(tables: Sequence[Path], settings: dict, out_png: Path, out_pdf: Path) -> None:
    """The alignment × KD grid at FR 0.4 and 0.6 of the settings' backbone."""
    settings = check_settings(settings)
    if len(tables) != 1 or "backbone" not in settings:
        raise CalexError("plot_ablation takes one loss_at_fr.csv and a `backbone` in --settings")
    if not Path(tables[0]).is_file():
        raise CalexError(f"{tables[0]} does not exist; run make_tables first")
    table = pd.read_csv(tables[0])
    if not COLUMNS <= set(table.columns):
        raise CalexError(f"{tables[0]} is of an older format; rerun make_tables")
    losses = table[table["backbone"] == settings["backbone"]]
    if losses.empty:
        raise CalexError(f"{tables[0]} has no rows of backbone {settings['backbone']}")
    runs = int(losses["runs"].iloc[0])
    where = f"{losses['dataset'].iloc[0]}, {settings['backbone']}"
    title = f"Ablation, alignment × KD: {where} (mean over {runs} run{'s' * (runs > 1)})"
    save_figure(plot_ablation(losses, ABLATION_FRS, title), out_png, out_pdf)


build_parser, main = figure_stage("ablation", __doc__, run_plot_ablation, "tables")

if __name__ == "__main__":
    raise SystemExit(main())
