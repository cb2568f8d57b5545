"""Stage `plot_exemplars`: near-threshold and deep correct exits of each branch at m = 0.2.

    python -m calex_steps.stages.plot_exemplars --exits results/D/B/calexnet/seed0/exits.npz \
        --prepared results/D/prepared.h5 --features results/D/B/features.h5 \
        --settings JSON --out-png exemplars.png --out-pdf exemplars.pdf
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from calex_steps.data.prepared import read_class_names
from calex_steps.errors import CalexError
from calex_steps.reporting.figures.exemplars import (
    EXEMPLARS_PER_KIND,
    exemplar_cells,
    exemplar_row_labels,
    plot_exemplars,
)
from calex_steps.reporting.figures.runs import (
    check_settings,
    figure_stage,
    load_run,
    pick_margin,
    read_test_images,
    where,
)
from calex_steps.reporting.figures.shift import SHIFT_MARGIN
from calex_steps.reporting.figures.style import note_figure, save_figure


def run_plot_exemplars(
    exits: Path | Sequence[Path],
    prepared: Path,
    features: Path,
    settings: dict,
    out_png: Path,
    out_pdf: Path,
) -> None:
    """Near-threshold and deep-above-threshold correct exits of one run's branches, at m = 0.2."""
    if not isinstance(exits, (str, Path)):
        if len(exits) != 1:
            raise CalexError("exemplars show one run: pass a single --exits file")
        exits = exits[0]
    settings = check_settings(settings)
    run = load_run(exits, settings["exit_signals"])
    margin, note = pick_margin(settings["margins"], SHIFT_MARGIN)
    images = read_test_images(prepared, features)
    names = read_class_names(prepared)
    cells = exemplar_cells(run, images, names, margin, EXEMPLARS_PER_KIND)
    title = (
        f"Correct exits of {run['recipe']} (seed {run['seed']}) at m = {margin:g}{note}: "
        f"{where([exits])}"
    )
    if all(cell is None for row in cells for cell in row):
        fig = note_figure("no branch released a correctly classified sample", title)
    else:
        groups = ["near the threshold", "deep above the threshold"]
        fig = plot_exemplars(cells, groups, title, exemplar_row_labels(run))
    save_figure(fig, out_png, out_pdf)


build_parser, main = figure_stage(
    "exemplars", __doc__, run_plot_exemplars, "exits", "prepared", "features"
)

if __name__ == "__main__":
    raise SystemExit(main())
