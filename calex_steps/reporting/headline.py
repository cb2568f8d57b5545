"""The README's headline table: loss at a few FRs and the largest FR within a loss budget,
one row per recipe, with the intervals of a run's tables (``results/tables/<dataset>/``).

    python -m calex_steps.reporting.headline results/tables/cifar10_jpeg \\
        --recipes calexnet noalign msp_global [--update README.md]

Cells are those of ``loss_at_fr.csv`` and ``iso_accuracy.csv`` (mean [interval], a
dagger when extrapolated, "—" when missing), printed as ``make_tables`` prints them.
Several table folders may be given (e.g. two real-data configurations); a recipe found
in more than one is named ``DATASET/RECIPE``. ``--update FILE`` rewrites the block
between ``<!-- headline:start -->`` and ``<!-- headline:end -->`` in FILE.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from calex_steps.cli import run_main
from calex_steps.errors import CalexError
from calex_steps.io import atomic_path
from calex_steps.reporting.tables import cell_text

FR_TARGETS = (0.4, 0.5, 0.6)
BUDGET = 1.0
START, END = "<!-- headline:start -->", "<!-- headline:end -->"


def read_folder(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``loss_at_fr.csv`` and ``iso_accuracy.csv`` of one ``results/tables/<dataset>/``."""
    frames = []
    for name in ("loss_at_fr.csv", "iso_accuracy.csv"):
        path = Path(folder) / name
        if not path.is_file():
            raise CalexError(f"{path} does not exist; run make_tables (snakemake) first")
        frames.append(pd.read_csv(path, keep_default_na=False, na_values=[""]))
    return frames[0], frames[1]


def read_folders(folders: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``read_folder`` of every folder, the loss tables and the iso tables concatenated."""
    parts = [read_folder(f) for f in folders]
    return tuple(pd.concat([p[i] for p in parts], ignore_index=True) for i in (0, 1))


def _rows_of(loss: pd.DataFrame, spec: str, datasets: set[str]) -> pd.DataFrame:
    """The rows of recipe ``spec`` (``RECIPE`` or ``DATASET/RECIPE``), from one place."""
    dataset, _, recipe = spec.rpartition("/")
    rows = loss[loss["recipe"] == recipe]
    if dataset:
        rows = rows[rows["dataset"] == dataset]
    places = sorted(set(zip(rows["dataset"], rows["backbone"], strict=True)))
    if not places:
        raise CalexError(
            f"recipe '{spec}' is not in the tables of {sorted(datasets)}; "
            f"choose among {sorted(set(loss['recipe']))}"
        )
    if len(places) > 1:
        raise CalexError(
            f"recipe '{spec}' is in several tables {places}; name it as DATASET/RECIPE "
            "(one backbone per dataset)"
        )
    return rows


def headline_rows(
    loss: pd.DataFrame,
    iso: pd.DataFrame,
    recipes: Sequence[str],
    fr_targets: Sequence[float] = FR_TARGETS,
    budget: float = BUDGET,
) -> list[list[str]]:
    """One row of cell texts per recipe: name, loss at each FR, largest FR within ``budget``.

    Args:
        loss, iso: long tables (``loss_at_fr.csv``, ``iso_accuracy.csv``), possibly of
            several datasets concatenated.
        recipes: the rows, in order (``RECIPE`` or ``DATASET/RECIPE``).
        fr_targets: FRs to read the loss at (each must be a ``fr_target`` of the table).
        budget: the loss budget in points (a ``loss_budget`` of the iso table).
    """
    datasets = set(loss["dataset"])
    out = []
    for spec in recipes:
        rows = _rows_of(loss, spec, datasets)
        where = rows.iloc[0][["dataset", "backbone", "recipe"]]
        cells = [f"`{spec}`"]
        for target in fr_targets:
            cell = rows[(rows["fr_target"] - target).abs() < 1e-9]
            if cell.empty:
                raise CalexError(
                    f"loss_at_fr.csv has no FR {target:g} (it has "
                    f"{sorted(set(rows['fr_target']))}); set report.fr_targets or --fr"
                )
            cells.append(_text(cell.iloc[0], 1))
        same = (iso[["dataset", "backbone", "recipe"]] == where.to_numpy()).all(axis=1)
        cell = iso[same & ((iso["loss_budget"] - budget).abs() < 1e-9)]
        if cell.empty:
            raise CalexError(
                f"iso_accuracy.csv has no loss budget {budget:g} pp for '{spec}'; "
                "set report.iso_losses or --budget"
            )
        cells.append(_text(cell.iloc[0], 2))
        out.append(cells)
    return out


def _text(row: pd.Series, digits: int) -> str:
    return cell_text(row["mean"], row["ci_lo"], row["ci_hi"], row["status"], digits)


def headline_markdown(
    loss: pd.DataFrame,
    iso: pd.DataFrame,
    recipes: Sequence[str],
    fr_targets: Sequence[float] = FR_TARGETS,
    budget: float = BUDGET,
) -> str:
    """The headline table as Markdown (what sits between the README's markers)."""
    header = ["recipe", *(f"loss at FR {t:g}" for t in fr_targets)]
    header.append(f"largest FR within {budget:g} pp")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in headline_rows(loss, iso, recipes, fr_targets, budget):
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def replace_block(text: str, table: str, where: str = "the file") -> str:
    """``text`` with the block between the headline markers replaced by ``table``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise CalexError(f"{where} needs one {START} line and one {END} line after it")
    head, rest = text.split(START)
    return head + START + "\n" + table + END + rest.split(END, 1)[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m calex_steps.reporting.headline", description=__doc__.splitlines()[0]
    )
    p.add_argument("folders", nargs="+", help="results/tables/<dataset>/ folders")
    p.add_argument("--recipes", nargs="+", help="rows, in order (default: every recipe)")
    p.add_argument("--fr", nargs="+", type=float, default=list(FR_TARGETS), help="FR columns")
    p.add_argument("--budget", type=float, default=BUDGET, help="loss budget, points")
    p.add_argument("--update", help="rewrite the marked block of this file instead of printing")
    return p


def main(argv=None) -> int:
    """Print the table, or write it into ``--update``'s marked block."""

    def run(argv) -> None:
        a = build_parser().parse_args(argv)
        loss, iso = read_folders(a.folders)
        recipes = a.recipes or list(dict.fromkeys(loss["recipe"]))
        table = headline_markdown(loss, iso, recipes, a.fr, a.budget)
        if not a.update:
            print(table, end="")
            return
        path = Path(a.update)
        text = replace_block(path.read_text(), table, str(path))
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text)

    return run_main(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
