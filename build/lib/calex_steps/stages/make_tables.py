"""Stage `make_tables`: accuracy loss at fixed FLOPs reductions for one dataset.

    python -m calex_steps.stages.make_tables --sweeps results/D/*/*/seed*/sweep.csv \
        --settings '{"backbones": ["resnet18", "resnet50"], "recipes": ["calexnet", ...]}' \
        --out-csv loss_at_fr.csv --out-md loss_at_fr.md --out-tex loss_at_fr.tex

Per seed, each recipe's Pareto curve is read at FR 0.4 ... 0.8 (SPEC section
10); the loss in points is averaged over seeds. The CSV is long (one row per
dataset, backbone, recipe and FR with mean, std and the number of seeds); the
Markdown and LaTeX tables put the backbones side by side in each cell.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from calex_steps.cli import parse_json_arg, stage_main, stage_parser
from calex_steps.data.files import save_csv, save_text
from calex_steps.errors import CalexError
from calex_steps.reporting import tables

log = logging.getLogger("calex")
SETTINGS_KEYS = ("backbones", "recipes", "fr_targets", "tolerance")
CSV_FLOAT = "%.4f"


def check_settings(settings: dict) -> dict:
    """Fill defaults for the optional keys; reject unknown or missing ones."""
    unknown = sorted(set(settings) - set(SETTINGS_KEYS))
    if unknown or not {"backbones", "recipes"} <= set(settings):
        raise CalexError(
            f"--settings takes the keys {list(SETTINGS_KEYS)} (backbones and recipes required); "
            f"got {sorted(settings)}"
        )
    return {"fr_targets": list(tables.FR_TARGETS), "tolerance": 0.08, **settings}


def run_make_tables(
    sweeps: Sequence[Path], settings: dict, out_csv: Path, out_md: Path, out_tex: Path
) -> pd.DataFrame:
    """Build the loss tables of one dataset from its sweep files; write CSV, Markdown, LaTeX.

    Returns:
        The long summary (``tables.summarise_loss`` columns).
    """
    settings = check_settings(settings)
    frame = tables.read_sweeps(sweeps)
    datasets = frame["dataset"].unique().tolist()
    if len(datasets) != 1:
        raise CalexError(f"make_tables builds one dataset's tables; the sweeps span {datasets}")
    dataset = datasets[0]
    per_seed = tables.loss_per_seed(frame, settings["fr_targets"], settings["tolerance"])
    summary = tables.summarise_loss(per_seed)
    wide = tables.wide_table(
        summary, dataset, settings["backbones"], settings["recipes"], settings["fr_targets"]
    )
    backbones = "/".join(settings["backbones"])
    title = (
        f"Accuracy loss (points) at fixed FLOPs reduction on {dataset}, mean over seeds; "
        f"each cell {backbones}; {tables.MISSING} = FR not reached."
    )
    save_csv(summary, out_csv, CSV_FLOAT)
    save_text(out_md, tables.to_markdown(wide, title))
    save_text(out_tex, tables.to_latex(wide, title, f"tab:loss-{dataset}"))
    log.info("wrote %d summary rows for %s", len(summary), dataset)
    return summary


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("make_tables", __doc__)
    p.add_argument("--sweeps", type=Path, nargs="+", required=True, help="sweep.csv files")
    p.add_argument("--settings", required=True, help='JSON: {"backbones": [...], "recipes": [...]}')
    for ext in ("csv", "md", "tex"):
        p.add_argument(f"--out-{ext}", type=Path, required=True)
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        run_make_tables(a.sweeps, parse_json_arg(a.settings), a.out_csv, a.out_md, a.out_tex)

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
