"""Stage make_tables: estimates with bootstrap intervals, paired differences, extrapolation
marks, the iso-accuracy and LR views and the paper-grid comparison, on hand-built sweeps."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from report_fixtures import cascade_exits, frontier_table, run_files, write_run

from calex_steps.cascade.sweep import ExitCosts, summary_table
from calex_steps.errors import CalexError
from calex_steps.reporting.bootstrap import (
    Design,
    Estimate,
    bootstrap_backbone,
    run_readings,
    split_weights,
)
from calex_steps.reporting.curves import interpolate_at_fr, interpolate_curve
from calex_steps.reporting.ranking import rank
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
    ranking = pd.read_csv(out / "ranking.csv").set_index(["view", "target", "recipe"]).sort_index()
    assert (ranking.loc[("loss_fr", 0.7), "verdict"] == "none").all()
    assert ranking.loc[("loss_fr", 0.7), "p_best"].isna().all()
    assert set(ranking.loc[("loss_fr", 0.6), "verdict"]) <= {"best", "not told apart"}
    # every measured recipe's probability of being best, adding up to one per target
    assert ranking.loc[("loss_fr", 0.6), "p_best"].sum() == pytest.approx(1.0)


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


def spread_over_exits(folder, branches: int) -> None:
    """Rewrite a one-branch run as a ``branches``-exit cascade: the images its branch
    released leave at branch (image % branches), deeper branches costing more; the
    frontier and paper-grid tables recomputed by the sweep's own summary."""
    with np.load(folder / "exits.npz") as data:
        exits = {k: data[k] for k in data.files}
    released = exits["exit_branch"] == 0
    spread = np.arange(exits["labels"].size) % branches
    exits["exit_branch"] = np.where(released, spread[None], branches).astype(np.int8)
    exits["costs"] = np.r_[np.linspace(0.05, 0.6, branches), 1.03]
    exits["times_ms"] = np.full(branches + 1, np.nan)
    np.savez(folder / "exits.npz", **exits)
    table = summary_table(exits, ExitCosts(exits["costs"], 1.0))
    table.to_csv(folder / "frontier.csv", index=False, float_format="%.6f")
    paper = np.isclose(table["margin"].to_numpy()[:, None], [0.01, 0.05, 0.1, 0.2, 0.3, 0.4,
                       0.6, 0.8]).any(axis=1)  # fmt: skip
    table[paper].to_csv(folder / "sweep.csv", index=False, float_format="%.6f")


def test_recipes_with_different_numbers_of_exits_share_the_tables(tmp_path):
    # calexnet keeps one exit, noalign's runs have six: each run's FR comes from its own costs.
    folders = [write_run(tmp_path / "results", r, seed=s) for r in SETTINGS["recipes"]
               for s in (0, 1)]  # fmt: skip
    for folder in folders[2:]:
        spread_over_exits(folder, 6)
    frame = pd.read_csv(folders[2] / "frontier.csv")
    assert [c for c in frame.columns if c.startswith("exit_frac")] == [
        *(f"exit_frac_{b}" for b in range(1, 7)),
        "exit_frac_backbone",
    ]
    out = make(folders, tmp_path / "tables")
    loss = out["loss_fr"].set_index(["recipe", "fr_target"])
    for recipe, runs in (("calexnet", folders[:2]), ("noalign", folders[2:])):
        expected = np.mean([frontier_loss(f, [0.4, 0.5]) for f in runs], axis=0)
        np.testing.assert_allclose(loss.loc[recipe].loc[[0.4, 0.5], "mean"], expected, atol=1e-4)
        reached = min(pd.read_csv(f / "frontier.csv")["fr"].max() for f in runs)
        assert loss.loc[(recipe, 0.4), "reached"] == pytest.approx(reached, abs=1e-5)
    # At the largest margin every image leaves a branch: the one-exit cascade pays 0.38 of
    # the MACs per image, the six-exit one image i the cost of branch i % 6 (0.05 .. 0.6).
    six = np.linspace(0.05, 0.6, 6)[np.arange(400) % 6]
    assert loss.loc[("calexnet", 0.4), "reached"] == pytest.approx(0.62, abs=1e-5)
    assert loss.loc[("noalign", 0.4), "reached"] == pytest.approx(1 - six.mean(), abs=1e-5)


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


def test_iso_accuracy_is_the_largest_fr_up_to_which_the_loss_stays_within_budget(tmp_path):
    folder = write_run(tmp_path / "results", "calexnet", quality=0.8)
    out = make([folder], tmp_path / "tables", {**SETTINGS, "recipes": ["calexnet"]})
    iso = out["iso_fr"].set_index("loss_budget")
    table = pd.read_csv(folder / "frontier.csv")
    bb = float(table["backbone_accuracy"].iloc[0])
    grid = np.linspace(0, table["fr"].max(), 200001)
    loss = 100 * (bb - interpolate_curve(np.r_[0, table["fr"]], np.r_[bb, table["accuracy"]], grid))
    for budget in (0.5, 1.0):
        stays = np.logical_and.accumulate(loss <= budget)  # from FR 0 up to the first crossing
        assert iso.loc[budget, "mean"] == pytest.approx(grid[stays].max(), abs=1e-4)
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


def test_the_best_is_named_only_when_it_wins_in_enough_replicates():
    # 100 replicates of three recipes' losses at one target: a wins 97 of them, b 2, and
    # a and b tie in one (half a win each); c never wins.
    a = np.ones(100)
    b = np.full(100, 2.0)
    b[:2], b[2] = 0.5, 1.0
    reps = np.stack([a, b, np.full(100, 3.0)], axis=1)[:, :, None]  # (B, R, T)
    point = np.array([[1.0], [2.0], [3.0]])
    est = Estimate(np.array([0.4]), point, reps, point[:, None], np.zeros((3, 1), np.int8),
                   np.ones(3))  # fmt: skip
    rows = rank(est, ["a", "b", "c"], "loss_fr", 0.95, 0.95, {})
    assert [(r["recipe"], r["p_best"], r["contender"]) for r in rows] == [
        ("a", 0.975, True),
        ("b", 0.025, False),
        ("c", 0.0, False),
    ]
    assert {r["verdict"] for r in rows} == {"best"}
    # At a stricter level a alone does not reach it: a and b cannot be told apart.
    rows = rank(est, ["a", "b", "c"], "loss_fr", 0.95, 0.98, {})
    assert [r["recipe"] for r in rows if r["contender"]] == ["a", "b"]
    assert {r["verdict"] for r in rows} == {"not told apart"}
    # Where higher is better c would always win, but its cell is extrapolated: it does
    # not compete, and b wins 97.5 replicates of 100.
    est.status[2, 0] = 1
    rows = rank(est, ["a", "b", "c"], "iso_fr", 0.95, 0.95, {})
    by_recipe = {r["recipe"]: r for r in rows}
    assert by_recipe["b"]["p_best"] == pytest.approx(0.975) and by_recipe["b"]["contender"]
    # A replicate in which a recipe has no reading is won by the others.
    reps[:50, 1, 0] = np.nan
    rows = rank(est, ["a", "b", "c"], "iso_fr", 0.95, 0.95, {})
    assert {r["recipe"]: r["p_best"] for r in rows}["b"] == pytest.approx(0.5)
    assert np.isnan(by_recipe["c"]["p_best"]) and by_recipe["c"]["status"] == "extrapolated"


def test_the_lr_view_reads_the_curve_on_predicted_times_not_macs(tmp_path):
    # Ten images the backbone gets right, one branch. Leaving at the branch costs half the
    # MACs (FR 0.5) but 0.2 of the backbone's time (LR 0.8); going through costs all the
    # MACs and 1.1 times the backbone's time (the head). At margin 0.5 five images leave
    # (one wrongly), at margin 1 all ten (three wrongly).
    exit_branch = np.array([[1] * 10, [0] * 5 + [1] * 5, [0] * 10])
    labels = np.zeros(10, np.int64)
    final = np.zeros((3, 10), np.int64)
    final[1, 0] = final[2, :3] = 1
    exits = {"margins": np.array([0.0, 0.5, 1.0]), "exit_branch": exit_branch,
             "final_pred": final, "labels": labels, "backbone_pred": labels,
             "test_index": np.arange(10), "costs": np.array([0.5, 1.0]),
             "total_macs": np.array(1.0), "times_ms": np.array([0.2, 1.1]),
             "backbone_ms": np.array(1.0), "pool_size": np.array(20),
             "bootstrap_seed": np.array(0),
             **{f"recal_{k}": np.empty((0, 3)) for k in ("accuracy", "fr", "lr")}}  # fmt: skip
    folder = tmp_path / "syn" / "r18" / "calexnet" / "seed0" / "split0"
    folder.mkdir(parents=True)
    np.savez(folder / "exits.npz", **exits)
    for name in ("frontier.csv", "sweep.csv"):
        frontier_table(exits).to_csv(folder / name, index=False, float_format="%.6f")
    segments = tmp_path / "syn" / "r18" / "latency" / "segments.json"
    segments.parent.mkdir(parents=True)
    segments.write_text(json.dumps({"device": "cpu", "threads": 1, "torch": "2",
                                    "per_batch": {"256": {}}}))  # fmt: skip
    settings = {"backbones": ["r18"], "recipes": ["calexnet"], "resamples": 100,
                "lr_targets": [0.2, 0.5, 0.6], "fr_targets": [0.2, 0.4]}  # fmt: skip
    out = make([folder], tmp_path / "tables", settings, [segments])
    # LR curve: (0, 1.0) anchor, (0.35, 0.9), (0.8, 0.7) (and (-0.1, 1.0) at margin 0).
    lr = out["loss_lr"].set_index("lr_target")
    expected = [100 * 0.1 * 0.2 / 0.35, 10 + 100 * 0.2 * 0.15 / 0.45, 10 + 100 * 0.2 * 0.25 / 0.45]
    np.testing.assert_allclose(lr["mean"], expected, atol=1e-6)
    assert (lr["status"] == "measured").all()
    # The FR view of the same exits: (0.25, 0.9), (0.5, 0.7); at FR 0.2 the loss is 8 points.
    fr = out["loss_fr"].set_index("fr_target")
    np.testing.assert_allclose(fr["mean"], [8.0, 10 + 100 * 0.2 * 0.15 / 0.25], atol=1e-6)


def test_overlapping_splits_share_each_image_weight():
    # Two splits of a pool of 12 images whose test parts share images 4..7: in every
    # replicate a shared image has one weight, whichever split reads it.
    a = split_weights(12, np.arange(0, 8), 50, seed=3)
    b = split_weights(12, np.arange(4, 12), 50, seed=3)
    assert (a[0] == 1).all() and (b[0] == 1).all()  # row 0: the data
    np.testing.assert_array_equal(a[1:, 4:], b[1:, :4])
    whole = split_weights(12, np.arange(12), 50, seed=3)
    assert (whole[1:].sum(axis=1) == 12).all()  # each replicate draws the pool's size
    assert not np.array_equal(whole, split_weights(12, np.arange(12), 50, seed=4))


def test_each_replicate_adds_its_recalibration_shift():
    # Four replicates whose image weights equal the data's, and two recalibrated curves 1
    # and 3 points less accurate than the run's at every margin: replicates 1 and 3 read the
    # loss 1 point higher, replicates 2 and 4 three points higher, in every view.
    exits = cascade_exits("calexnet", 0, 0, n=200)
    accuracy = (exits["final_pred"] == exits["labels"]).mean(axis=1)
    fr = 1 - exits["costs"][exits["exit_branch"]].mean(axis=1)
    exits |= {"recal_accuracy": accuracy[None] - [[0.01], [0.03]],
              "recal_fr": np.stack([fr, fr]),
              "recal_lr": np.full((2, fr.size), np.nan)}  # fmt: skip
    design = Design((0.3, 0.5), (0.3,), (1.0,), 0.08, 4, 0)
    got = run_readings(exits, np.ones((5, 200), np.float32), design, tight_row=5)
    for view in ("loss_fr", "tight"):
        values = got[view][0]
        np.testing.assert_allclose(
            values[:, 1:] - values[:, :1], [[1, 3, 1, 3]] * len(values), atol=1e-4
        )  # float32 weighted means
