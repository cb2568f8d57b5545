"""Stage make_tables: loss at fixed FR per seed, over seeds, and in CSV, Markdown and LaTeX."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from calex_steps.errors import CalexError
from calex_steps.reporting import tables
from calex_steps.stages.make_tables import run_make_tables

SUMMARY_COLUMNS = ("dataset", "backbone", "recipe", "fr_target", "mean", "std", "seeds")


def write_sweep(root, dataset, backbone, recipe, seed, fr, acc, backbone_acc):
    """A minimal sweep.csv at the workflow's path layout."""
    path = root / dataset / backbone / recipe / f"seed{seed}" / "sweep.csv"
    path.parent.mkdir(parents=True)
    pd.DataFrame({"margin": [0.1, 0.2][: len(fr)], "accuracy": acc, "fr": fr,
                  "backbone_accuracy": backbone_acc}).to_csv(path, index=False)  # fmt: skip
    return path


def test_loss_per_seed_then_mean_and_std(tmp_path):
    # Two seeds read at FR 0.5: accuracy 0.85 and 0.80 against backbone 0.90 -> 5 and 10 points.
    paths = [
        write_sweep(tmp_path, "d", "r18", "calexnet", 0, [0.5], [0.85], 0.9),
        write_sweep(tmp_path, "d", "r18", "calexnet", 1, [0.5], [0.80], 0.9),
    ]
    per_seed = tables.loss_per_seed(tables.read_sweeps(paths), [0.5, 0.7])
    assert per_seed["seed"].tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(per_seed["loss"].iloc[[0, 2]], [5.0, 10.0])
    summary = tables.summarise_loss(per_seed)
    row = summary[summary["fr_target"] == 0.5].iloc[0]
    assert row["mean"] == pytest.approx(7.5)
    assert row["std"] == pytest.approx(np.std([5.0, 10.0], ddof=1))
    assert row["seeds"] == 2
    # FR 0.7 lies more than 0.08 beyond 0.5: "—" for both seeds.
    assert summary[summary["fr_target"] == 0.7]["mean"].isna().all()


def test_mean_is_missing_unless_every_seed_reaches_the_fr():
    per_seed = pd.DataFrame({"dataset": "d", "backbone": "b", "recipe": "r", "seed": [0, 1],
                             "fr_target": 0.8, "loss": [3.0, np.nan]})  # fmt: skip
    row = tables.summarise_loss(per_seed).iloc[0]
    assert np.isnan(row["mean"]) and np.isnan(row["std"]) and row["seeds"] == 1


def test_cell_format_joins_backbones_and_marks_missing():
    assert tables.format_cell([1.234, 0.5]) == "1.23/0.50"
    assert tables.format_cell([np.nan, 2.0]) == "—/2.00"
    assert tables.format_cell([np.nan]) == "—"


def test_wide_table_keeps_study_order_and_fills_absent_backbones():
    summary = pd.DataFrame({
        "dataset": "d", "backbone": ["resnet18", "resnet50", "resnet18"],
        "recipe": ["calexnet", "calexnet", "noalign"], "fr_target": 0.4,
        "mean": [1.0, 2.5, 3.0], "std": np.nan, "seeds": 1,
    })  # fmt: skip
    wide = tables.wide_table(summary, "d", ["resnet18", "resnet50"], ["noalign", "calexnet"], [0.4])
    assert wide.index.tolist() == ["noalign", "calexnet"]
    assert wide.loc["calexnet", "FR 0.4"] == "1.00/2.50"
    assert wide.loc["noalign", "FR 0.4"] == "3.00/—"


def test_parse_run_path_rejects_other_layouts():
    assert tables.parse_run_path("results/d/b/r/seed2/sweep.csv")["seed"] == 2
    with pytest.raises(CalexError, match="seedN"):
        tables.parse_run_path("results/d/b/r/sweep.csv")


def test_make_tables_writes_csv_markdown_and_latex(tmp_path):
    paths = [
        write_sweep(tmp_path, "syn", "r18", "calexnet", 0, [0.4, 0.6], [0.88, 0.80], 0.9),
        write_sweep(tmp_path, "syn", "r50", "calexnet", 0, [0.4, 0.6], [0.89, 0.85], 0.9),
        write_sweep(tmp_path, "syn", "r18", "kd_only", 0, [0.4, 0.6], [0.85, 0.70], 0.9),
    ]
    out = tmp_path / "out"
    settings = {"backbones": ["r18", "r50"], "recipes": ["calexnet", "kd_only"]}
    run_make_tables(paths, settings, out / "t.csv", out / "t.md", out / "t.tex")
    csv = pd.read_csv(out / "t.csv")
    assert list(csv.columns) == [
        "dataset",
        "backbone",
        "recipe",
        "fr_target",
        "mean",
        "std",
        "seeds",
    ]
    assert len(csv) == 3 * 5
    md = (out / "t.md").read_text()
    assert "| calexnet | 2.00/1.00 | 6.00/3.00 | 10.00/5.00 | —/— | —/— |" in md
    assert "| kd_only | 5.00/— |" in md
    assert "each cell r18/r50" in md
    tex = (out / "t.tex").read_text()
    assert "kd\\_only & 5.00/--- &" in tex and "\\toprule" in tex
    with pytest.raises(CalexError, match="backbones and recipes required"):
        run_make_tables(paths, {"recipes": []}, out / "a.csv", out / "a.md", out / "a.tex")
