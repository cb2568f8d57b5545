"""Stage write_summary: sentences generated from the loss tables."""

from __future__ import annotations

import pandas as pd
import pytest

from calex_steps.reporting.summary import best_per_fr
from calex_steps.stages.write_summary import run_write_summary


def test_summary_names_the_least_loss_recipe_per_fr(tmp_path):
    table = pd.DataFrame({
        "dataset": "syn", "backbone": "r18",
        "recipe": ["calexnet", "noalign", "calexnet", "noalign"],
        "fr_target": [0.4, 0.4, 0.8, 0.8], "mean": [1.5, 2.25, float("nan"), float("nan")],
        "std": [0.5, 0.1, float("nan"), float("nan")], "seeds": [3, 3, 0, 0],
    })  # fmt: skip
    table.to_csv(tmp_path / "loss.csv", index=False)
    best = best_per_fr(table)
    assert best["best"].tolist() == ["calexnet", ""]
    assert best["gap"].iloc[0] == pytest.approx(0.75)
    text = run_write_summary([tmp_path / "loss.csv"], tmp_path / "summary.md")
    assert "## syn, r18" in text
    assert ("- FR 0.4: **calexnet** loses least, 1.50 ± 0.50 points (3 seeds); "
            "next is noalign, 0.75 points more.") in text  # fmt: skip
    assert "- FR 0.8: no recipe reaches this FR." in text
    assert (tmp_path / "summary.md").read_text() == text
