"""Stage write_summary: sentences generated from the rankings make_tables writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from report_fixtures import run_files, write_run

from calex_steps.errors import CalexError
from calex_steps.reporting.ranking import COLUMNS
from calex_steps.stages.make_tables import run_make_tables
from calex_steps.stages.write_summary import run_write_summary

BASIS = "95% bootstrap intervals over test images, 3 seeds and 5 splits (2000 resamples)"


def ranking_row(view, target, verdict, recipe="", p_best=np.nan, contender=False, **values):
    row = dict.fromkeys(COLUMNS, np.nan)
    row.update(dataset="syn", backbone="r18", view=view, target=target, verdict=verdict,
               basis=BASIS, recipe=recipe, status="measured", p_best=p_best, level=0.95,
               contender=contender)  # fmt: skip
    return {**row, **values}


def test_summary_names_the_best_only_when_it_is_probably_best(tmp_path):
    rows = [
        ranking_row("loss_fr", 0.4, "best", "align_only", 0.97, True, mean=13.71,
                    ci_lo=12.9, ci_hi=14.52),
        ranking_row("loss_fr", 0.4, "best", "calexnet", 0.03, mean=14.4, ci_lo=13.6,
                    ci_hi=15.2),
        ranking_row("loss_fr", 0.5, "not told apart", "calexnet", 0.6, True, mean=20.6,
                    ci_lo=19.8, ci_hi=21.4),
        ranking_row("loss_fr", 0.5, "not told apart", "noalign", 0.38, True, mean=20.9,
                    ci_lo=20.0, ci_hi=21.7),
        ranking_row("loss_fr", 0.5, "not told apart", "kd_only", 0.02, mean=22.0,
                    ci_lo=21.1, ci_hi=22.8),
        ranking_row("loss_fr", 0.7, "none", "calexnet", status="extrapolated"),
        ranking_row("iso_fr", 1.0, "single", "kd_only", 1.0, True, mean=0.123, ci_lo=0.1,
                    ci_hi=0.15),
        ranking_row("loss_lr", np.nan, "not measured", condition="not measured",
                    status="not measured"),
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "ranking.csv", index=False)
    text = run_write_summary([tmp_path / "ranking.csv"], tmp_path / "summary.md")
    assert "## syn, r18" in text and f"Intervals: {BASIS}." in text
    assert "named the best only when that probability\nreaches 0.95;" in text
    assert ("- FR 0.4: **align_only** loses least, 13.7 pp [12.9, 14.5] (probability of "
            "being best 0.97).") in text  # fmt: skip
    assert ("- FR 0.5: cannot be told apart from the best: **calexnet** 20.6 pp "
            "[19.8, 21.4], probability 0.60; **noalign** 20.9 pp [20.0, 21.7], "
            "probability 0.38.") in text  # fmt: skip
    assert "kd_only** 22.0" not in text  # outside the set whose probabilities reach 0.95
    assert "- FR 0.7: no recipe reaches this target without extrapolation." in text
    assert ("- loss ≤ 1 pp: **kd_only** reaches the largest FR, 0.12 [0.10, 0.15]; "
            "no other recipe reaches it without extrapolation.") in text  # fmt: skip
    assert "fixed latency reduction (points, lower is better): not measured" in text
    assert (tmp_path / "summary.md").read_text() == text


def test_summary_of_a_made_table_names_the_device_of_the_lr_view(tmp_path):
    folders = [write_run(tmp_path / "results", r, latency=True) for r in ("calexnet", "noalign")]
    settings = {"backbones": ["r18"], "recipes": ["calexnet", "noalign"], "resamples": 200}
    run_make_tables(*run_files(folders), settings, tmp_path / "tables")
    text = run_write_summary([tmp_path / "tables" / "ranking.csv"], tmp_path / "summary.md")
    assert "fixed latency reduction (points, lower is better), measured on an unrecorded" in text
    assert "- FR 0.4: " in text and "- LR 0.2: " in text and "- loss ≤ 0.5 pp: " in text


def test_a_ranking_of_an_older_format_is_refused(tmp_path):
    pd.DataFrame({"dataset": ["syn"], "mean": [1.0]}).to_csv(tmp_path / "old.csv", index=False)
    with pytest.raises(CalexError, match="rerun make_tables"):
        run_write_summary([tmp_path / "old.csv"], tmp_path / "summary.md")
    assert not (tmp_path / "summary.md").exists()
