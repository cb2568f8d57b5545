"""Stage `make_tables`: accuracy loss at fixed FLOPs reductions for one dataset.

Usage:
    python -m calex_steps.make_tables --sweeps results/D/*/*/seed*/sweep.csv \
        --settings '{"backbones": ["resnet18", "resnet50"], "recipes": ["calexnet", ...]}' \
        --out-csv loss_at_fr.csv --out-md loss_at_fr.md --out-tex loss_at_fr.tex

Per seed, each recipe's Pareto curve is read at FR 0.4 ... 0.8 (SPEC section
10); the loss in points is averaged over seeds. The CSV is long (one row per
dataset, backbone, recipe and FR with mean, std and the number of seeds); the
Markdown and LaTeX tables put the backbones side by side in each cell.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from calex_steps import tables
from calex_steps.io import CalexError, atomic_path, parse_json_arg, run_main, setup_logging

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
    log = setup_logging()
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
    with atomic_path(out_csv) as tmp:
        summary.to_csv(tmp, index=False, float_format=CSV_FLOAT, lineterminator="\n")
    with atomic_path(out_md) as tmp:
        tmp.write_text(tables.to_markdown(wide, title), encoding="utf-8")
    with atomic_path(out_tex) as tmp:
        tmp.write_text(tables.to_latex(wide, title, f"tab:loss-{dataset}"), encoding="utf-8")
    log.info("wrote %d summary rows for %s", len(summary), dataset)
    return summary


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of the stage."""
    p = argparse.ArgumentParser(prog="python -m calex_steps.make_tables", description=__doc__)
    p.add_argument("--sweeps", type=Path, nargs="+", required=True, help="sweep.csv files")
    p.add_argument("--settings", required=True, help='JSON: {"backbones": [...], "recipes": [...]}')
    p.add_argument("--out-csv", type=Path, required=True)
    p.add_argument("--out-md", type=Path, required=True)
    p.add_argument("--out-tex", type=Path, required=True)
    return p


def _main(argv) -> None:
    """Parse the arguments and run the stage."""
    args = build_parser().parse_args(argv)
    run_make_tables(
        args.sweeps, parse_json_arg(args.settings), args.out_csv, args.out_md, args.out_tex
    )


def main(argv=None) -> int:
    """Entry point: returns 0 on success, 1 on a CalexError (printed as one line)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
