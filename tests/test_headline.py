"""The README's headline table: rendered from a run's table files, and the README's copy is
the generator's (checked against the run's files whenever they are present)."""

from __future__ import annotations

import math
import re
import shlex

import pandas as pd
import pytest
import yaml
from conftest import ROOT

from calex_steps.errors import CalexError
from calex_steps.reporting import headline

NAN = math.nan
WHERE = {"dataset": "d", "backbone": "b"}


def loss_rows():
    """Recipe a: measured, measured, extrapolated; recipe c: missing at FR 0.4."""
    cells = [
        ("a", 0.4, 14.24, 13.31, 15.04, "measured"),
        ("a", 0.5, 21.56, 20.81, 22.34, "measured"),
        ("a", 0.6, 36.02, 34.77, 37.12, "extrapolated"),
        ("a", 0.7, NAN, NAN, NAN, "missing"),
        ("c", 0.4, NAN, NAN, NAN, "missing"),
        ("c", 0.5, -0.04, -0.71, 0.38, "measured"),
        ("c", 0.6, 3.0, 2.46, 3.54, "measured"),
        ("c", 0.7, 9.0, 8.0, 10.0, "measured"),
    ]
    return pd.DataFrame(
        [{**WHERE, "recipe": r, "fr_target": t, "mean": m, "ci_lo": lo, "ci_hi": hi,
          "status": s} for r, t, m, lo, hi, s in cells]
    )  # fmt: skip


def iso_rows():
    cells = [
        ("a", 0.5, 0.031, 0.024, 0.033, "measured"),
        ("a", 1.0, 0.054, 0.047, 0.061, "measured"),
        ("c", 0.5, 0.11, 0.094, 0.14, "measured"),
        ("c", 1.0, 0.72, 0.66, 0.78, "extrapolated"),
    ]
    return pd.DataFrame(
        [{**WHERE, "recipe": r, "loss_budget": t, "mean": m, "ci_lo": lo, "ci_hi": hi,
          "status": s} for r, t, m, lo, hi, s in cells]
    )  # fmt: skip


EXPECTED = """\
| recipe | loss at FR 0.4 | loss at FR 0.5 | loss at FR 0.6 | largest FR within 1 pp |
|---|---|---|---|---|
| `c` | — | 0.0 [-0.7, 0.4] | 3.0 [2.5, 3.5] | 0.72 [0.66, 0.78]† |
| `a` | 14.2 [13.3, 15.0] | 21.6 [20.8, 22.3] | 36.0 [34.8, 37.1]† | 0.05 [0.05, 0.06] |
"""


def write_tables(folder, loss=None, iso=None):
    folder.mkdir(parents=True)
    (loss_rows() if loss is None else loss).to_csv(folder / "loss_at_fr.csv", index=False)
    (iso_rows() if iso is None else iso).to_csv(folder / "iso_accuracy.csv", index=False)
    return folder


def test_rows_in_the_order_asked_with_marks_and_intervals():
    # hand-read from the rows above: one decimal for losses, two for FRs; -0.04 prints as
    # "0.0", never "-0.0"
    assert headline.headline_markdown(loss_rows(), iso_rows(), ["c", "a"]) == EXPECTED


def test_the_cli_reads_the_csv_files_and_updates_only_the_marked_block(tmp_path, capsys):
    folder = write_tables(tmp_path / "tables" / "d")
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{headline.START}\nold table\n{headline.END}\nafter\n")
    assert headline.main([str(folder), "--recipes", "c", "a", "--update", str(readme)]) == 0
    text = readme.read_text()
    table = text.split(headline.START + "\n")[1].split(headline.END)[0]
    assert table == headline.headline_markdown(loss_rows(), iso_rows(), ["c", "a"])
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{headline.END}\nafter\n")
    assert headline.main([str(folder), "--fr", "0.5", "--budget", "0.5"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "| recipe | loss at FR 0.5 | largest FR within 0.5 pp |"
    assert printed[2:] == ["| `a` | 21.6 [20.8, 22.3] | 0.03 [0.02, 0.03] |",
                           "| `c` | 0.0 [-0.7, 0.4] | 0.11 [0.09, 0.14] |"]  # fmt: skip


def test_several_folders_and_a_recipe_in_two_of_them(tmp_path):
    first = write_tables(tmp_path / "d")
    other = loss_rows().assign(dataset="e"), iso_rows().assign(dataset="e")
    second = write_tables(tmp_path / "e", *other)
    loss, iso = headline.read_folders([first, second])
    with pytest.raises(CalexError, match="recipe 'a' is in several tables .*DATASET/RECIPE"):
        headline.headline_rows(loss, iso, ["a"])
    rows = headline.headline_rows(loss, iso, ["e/a", "d/c"])
    assert [r[0] for r in rows] == ["`e/a`", "`d/c`"] and rows[0][1] == "14.2 [13.3, 15.0]"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"recipes": ["nope"]}, r"recipe 'nope' is not in the tables of \['d'\]; choose among"),
        ({"recipes": ["a"], "fr_targets": [0.45]}, "loss_at_fr.csv has no FR 0.45"),
        ({"recipes": ["a"], "budget": 2.0}, "iso_accuracy.csv has no loss budget 2 pp for 'a'"),
    ],
)
def test_what_the_tables_lack_is_named(kwargs, message):
    with pytest.raises(CalexError, match=message):
        headline.headline_rows(loss_rows(), iso_rows(), **kwargs)


def test_a_missing_folder_and_missing_markers_are_one_line(tmp_path, capsys):
    assert headline.main([str(tmp_path / "none")]) == 1
    assert "loss_at_fr.csv does not exist; run make_tables" in capsys.readouterr().err
    with pytest.raises(CalexError, match="needs one <!-- headline:start --> line"):
        headline.replace_block("no markers here\n", "| t |\n", "README.md")


# ---- the README's copy ---------------------------------------------------------------------

CELL = r"(—|-?\d+\.\d+ \[-?\d+\.\d+, -?\d+\.\d+\]†?)"


def readme_block() -> tuple[list[str], str]:
    """The generator's arguments (from the comment above the block) and the block itself."""
    text = (ROOT / "README.md").read_text()
    assert headline.START in text, "README.md lost its headline markers"
    before, rest = text.split(headline.START + "\n")
    command = re.findall(r"<!-- python -m calex_steps\.reporting\.headline (.*?) -->", before)
    assert command, "README.md lost the command that generates its headline table"
    return shlex.split(command[-1]), rest.split(headline.END)[0]


def test_readme_headline_has_the_generators_shape():
    args, block = readme_block()
    a = headline.build_parser().parse_args(args)
    lines = block.splitlines()
    header = ["recipe", *(f"loss at FR {t:g}" for t in a.fr), f"largest FR within {a.budget:g} pp"]
    assert lines[0] == "| " + " | ".join(header) + " |"
    studied = set()
    for path in ROOT.glob("config/*.yaml"):
        studied |= set(yaml.safe_load(path.read_text())["study"]["recipes"])
    rows = [re.findall(r"[^|]+", line) for line in lines[2:]]
    assert [r[0].strip().strip("`").split("/")[-1] for r in rows] == [
        r.split("/")[-1] for r in a.recipes
    ], "the rows are not the --recipes of the command above the table"
    for row in rows:
        assert row[0].strip().strip("`").split("/")[-1] in studied, row
        assert all(re.fullmatch(CELL, cell.strip()) for cell in row[1:]), row


def test_readme_headline_equals_the_run_it_quotes():
    args, block = readme_block()
    a = headline.build_parser().parse_args(args)
    folders = [ROOT / f for f in a.folders]
    if not all((f / "loss_at_fr.csv").is_file() for f in folders):
        pytest.skip(f"the real-data run's tables {a.folders} are not in this checkout")
    loss, iso = headline.read_folders(folders)
    assert block == headline.headline_markdown(loss, iso, a.recipes, a.fr, a.budget), (
        "README's headline table is stale: run the command in the comment above it"
    )
