"""Stage make_tables: estimates with bootstrap intervals, paired differences, extrapolation
marks, the iso-accuracy and LR views and the paper-grid comparison, on hand-built sweeps."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from report_fixtures import run_files, write_run

from calex_steps.errors import CalexError
from calex_steps.reporting.bootstrap import Design, bootstrap_backbone
from calex_steps.reporting.curves import interpolate_at_fr, interpolate_curve
from calex_steps.stages.make_tables import run_make_tables

SETTINGS = {"backbones": ["r18"], "recipes": ["calexnet", "noalign"], "resamples": 200}


def make(folders, out, settings=None, segments=()):
    frontiers, sweeps, exits = run_files(folders)
    return run_make_tables(frontiers, sweeps, exits, settings or SETTINGS, out, segments)


def frontier_loss(folder, targets) -> np.ndarray:
    """Loss in points read on one run's frontier.csv with the public interpolate_at_fr."""
    table = pd.read_csv(folder / "frontier.csv")
    bb = float(table["backbone_accuracy"].iloc[0])
    return 100 * (bb - interpolate_at_fr(table["fr"], table["accuracy"], bb, targets))


def test_a_cell_past_the_reached_fr_is_marked_in_csv_markdown_and_latex(tmp_path):
    # Both sweeps stop at FR 0.62: FR 0.7 is 0.08 beyond (extrapolated), FR 0.8 is missing.
    folders = [write_run(tmp_path / "results", r, reach=0.62) for r in SETTINGS["recipes"]]
    out = tmp_path / "tables"
    make(folders, out)
    csv = pd.read_csv(out / "loss_at_fr.csv").set_index(["recipe", "fr_target"])
    assert csv.loc[("calexnet", 0.6), "status"] == "measured"
    assert csv.loc[("calexnet", 0.7), "status"] == "extrapolated"
    assert csv.loc[("calexnet", 0.8), "status"] == "missing"
    assert np.isnan(csv.loc[("calexnet", 0.8), "mean"])
    assert csv.loc[("calexnet", 0.7), "reached"] == pytest.approx(0.62, abs=1e-4)
    # The extrapolated value extends the last segment, as the public interpolate_at_fr does.
    assert csv.loc[("calexnet", 0.7), "mean"] == pytest.approx(frontier_loss(folders[0], 0.7))
    md = (out / "loss_at_fr.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| `calexnet` |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4].endswith("†") and "†" not in cells[3] and cells[5] == "—"
    tex = (out / "loss_at_fr.tex").read_text()
    line = next(t for t in tex.splitlines() if t.startswith("calexnet &"))
    assert line.split(" & ")[4].endswith("\\textsuperscript{\\dag}")
    # Extrapolated cells never enter the ranking the summary is written from.
    ranking = pd.read_csv(out / "ranking.csv").set_index(["view", "target"])
    assert ranking.loc[("loss_fr", 0.7), "verdict"] == "none"
    assert ranking.loc[("loss_fr", 0.6), "verdict"] in ("distinguishable", "not distinguishable")


def test_point_estimates_average_the_runs_read_as_interpolate_at_fr_reads_them(tmp_path):
    folders = [write_run(tmp_path / "results", r, seed=s, split=k, quality=q)
               for r, q in (("calexnet", 0.9), ("noalign", 0.7))
               for s in (0, 1) for k in (0, 1)]  # fmt: skip
    out = make(folders, tmp_path / "tables")
    loss = out["loss_fr"].set_index(["recipe", "fr_target"])
    for recipe, runs in (("calexnet", folders[:4]), ("noalign", folders[4:])):
        expected = np.mean([frontier_loss(f, [0.4, 0.5]) for f in runs], axis=0)
        np.testing.assert_allclose(loss.loc[recipe].loc[[0.4, 0.5], "mean"], expected, atol=1e-4)
        assert (loss.loc[recipe, "runs"] == 4).all()
    # noalign's branch is right less often: it loses more, and the paired difference says so.
    assert loss.loc[("noalign", 0.5), "diff"] == 0.0
    assert loss.loc[("calexnet", 0.5), "diff_hi"] < 0


def test_identical_recipes_differ_by_exactly_zero(tmp_path):
    calexnet = write_run(tmp_path / "results", "calexnet")
    twin = calexnet.parents[2] / "noalign" / "seed0" / "split0"
    shutil.copytree(calexnet, twin)
    out = make([calexnet, twin], tmp_path / "tables")
    rows = out["loss_fr"][
        (out["loss_fr"]["recipe"] == "calexnet") & (out["loss_fr"]["status"] != "missing")
    ]
    assert (rows[["diff", "diff_lo", "diff_hi"]].to_numpy() == 0).all()
    assert (rows["ci_hi"] > rows["ci_lo"]).all()  # the images still vary


def test_image_resampling_gives_the_paired_standard_error(tmp_path):
    # One run: the loss at a margin is 100·mean(d), d = backbone right − cascade right per
    # image; its bootstrap spread must be the paired standard error 100·sd(d)/√n.
    folder = write_run(tmp_path / "results", "calexnet", n=2000, quality=0.6)
    design = Design((0.3,), (0.3,), (1.0,), 0.08, 2000, 0)
    runs = {
        ("calexnet", 0, 0): (
            folder / "exits.npz",
            *pd.read_csv(folder / "frontier.csv")[["margin", "accuracy"]].T.to_numpy(),
        )
    }
    est = bootstrap_backbone(runs, ["calexnet"], [0], [0], design, "r18", tight_margin=0.4)
    with np.load(folder / "exits.npz") as data:
        row = int(np.flatnonzero(np.isclose(data["margins"], 0.4))[0])
        d = (data["backbone_pred"] == data["labels"]).astype(float) - (
            data["final_pred"][row] == data["labels"]
        )
    assert est["tight"].point[0, 0] == pytest.approx(100 * d.mean())
    expected = 100 * d.std() / np.sqrt(d.size)
    assert np.std(est["tight"].reps[:, 0, 0]) == pytest.approx(expected, rel=0.1)


def test_seed_spread_widens_the_interval(tmp_path):
    one = make([write_run(tmp_path / "a", "calexnet", quality=0.75)], tmp_path / "t1",
               {**SETTINGS, "recipes": ["calexnet"]})  # fmt: skip
    three = make([write_run(tmp_path / "b", "calexnet", seed=s, quality=q)
                  for s, q in enumerate((0.95, 0.75, 0.55))], tmp_path / "t3",
                 {**SETTINGS, "recipes": ["calexnet"]})  # fmt: skip
    width = {}
    for name, out in (("one", one), ("three", three)):
        row = out["loss_fr"].set_index("fr_target").loc[0.5]
        width[name] = row["ci_hi"] - row["ci_lo"]
    assert width["three"] > 2 * width["one"]


def test_the_same_bootstrap_seed_gives_the_same_intervals(tmp_path):
    folders = [
        write_run(tmp_path / "results", r, seed=s) for r in ("calexnet", "noalign") for s in (0, 1)
    ]
    a = make(folders, tmp_path / "a")["loss_fr"]
    b = make(folders, tmp_path / "b")["loss_fr"]
    c = make(folders, tmp_path / "c", {**SETTINGS, "bootstrap_seed": 1})["loss_fr"]
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["ci_lo"].fillna(0), c["ci_lo"].fillna(0))
    np.testing.assert_allclose(a["mean"], c["mean"])


def test_iso_accuracy_is_the_largest_fr_within_the_budget(tmp_path):
    folder = write_run(tmp_path / "results", "calexnet", quality=0.8)
    out = make([folder], tmp_path / "tables", {**SETTINGS, "recipes": ["calexnet"]})
    iso = out["iso_fr"].set_index("loss_budget")
    table = pd.read_csv(folder / "frontier.csv")
    bb = float(table["backbone_accuracy"].iloc[0])
    grid = np.linspace(0, table["fr"].max(), 200001)
    loss = 100 * (bb - interpolate_curve(np.r_[0, table["fr"]], np.r_[bb, table["accuracy"]], grid))
    for budget in (0.5, 1.0):
        assert iso.loc[budget, "mean"] == pytest.approx(grid[loss <= budget].max(), abs=1e-4)
        assert iso.loc[budget, "status"] == "measured"


def test_paper_grid_reports_how_far_each_cell_moves(tmp_path):
    folders = [write_run(tmp_path / "results", r) for r in SETTINGS["recipes"]]
    out = make(folders, tmp_path / "tables")
    grid = out["paper_grid"].set_index(["recipe", "fr_target"])
    table = pd.read_csv(folders[0] / "sweep.csv")
    bb = float(table["backbone_accuracy"].iloc[0])
    paper = 100 * (bb - interpolate_at_fr(table["fr"], table["accuracy"], bb, 0.5))
    assert grid.loc[("calexnet", 0.5), "paper_grid"] == pytest.approx(paper, abs=1e-4)
    np.testing.assert_allclose(grid["moved"], grid["paper_grid"] - grid["frontier"])
    assert (
        "(+" in (tmp_path / "tables" / "paper_grid.md").read_text()
        or "(-" in (tmp_path / "tables" / "paper_grid.md").read_text()
    )


def test_the_lr_view_names_its_device_or_says_not_measured(tmp_path):
    timed = [write_run(tmp_path / "a", r, latency=True) for r in SETTINGS["recipes"]]
    segments = tmp_path / "a" / "syn" / "r18" / "latency" / "segments.json"
    segments.parent.mkdir(parents=True)
    info = {"device": "cpu", "threads": 2, "torch": "2.14.1", "batch_sizes": [1, 256],
            "per_batch": {"1": {}, "256": {}}}  # fmt: skip
    segments.write_text(json.dumps(info))
    settings = {**SETTINGS, "lr_batch_size": 256}
    out = make(timed, tmp_path / "t", settings, [segments])
    assert set(out["loss_lr"]["status"]) <= {"measured", "extrapolated", "missing"}
    assert "cpu, batch 256, 2 threads" in (tmp_path / "t" / "loss_at_lr.md").read_text()
    with pytest.raises(CalexError, match="latency.lr_batch_size"):
        make(timed, tmp_path / "u", {**settings, "lr_batch_size": 32}, [segments])
    untimed = [write_run(tmp_path / "b", r) for r in SETTINGS["recipes"]]
    out = make(untimed, tmp_path / "v")
    assert (out["loss_lr"]["status"] == "not measured").all()
    assert "**r18**: not measured" in (tmp_path / "v" / "loss_at_lr.md").read_text()
    ranking = pd.read_csv(tmp_path / "v" / "ranking.csv")
    assert (ranking.loc[ranking["view"] == "loss_lr", "verdict"] == "not measured").all()


def test_old_or_inconsistent_sweep_files_stop_with_one_line(tmp_path):
    folders = [write_run(tmp_path / "results", r) for r in SETTINGS["recipes"]]
    frontier = folders[0] / "frontier.csv"
    table = pd.read_csv(frontier)
    table.drop(columns="lr").to_csv(frontier, index=False)
    with pytest.raises(CalexError, match="older format.*rerun sweep_margins"):
        make(folders, tmp_path / "t")
    table.assign(accuracy=table["accuracy"] + 0.01).to_csv(frontier, index=False)
    with pytest.raises(CalexError, match="does not match its exits"):
        make(folders, tmp_path / "t")
    table.to_csv(frontier, index=False)
    with np.load(folders[1] / "exits.npz") as data:
        old = {k: data[k] for k in ("margins", "exit_branch", "final_pred", "labels")}
    np.savez(folders[1] / "exits.npz", **old)
    with pytest.raises(CalexError, match="older format.*costs"):
        make(folders, tmp_path / "t")
    with pytest.raises(CalexError, match="lacks seed 0 split 0"):
        make(folders[:1], tmp_path / "t")
    with pytest.raises(CalexError, match="backbones and recipes required"):
        make(folders, tmp_path / "t", {"recipes": ["calexnet"]})
    assert not (tmp_path / "t").exists()
