"""The margin sweep: the pure function on synthetic cases and the entry point end to end."""

import json
import re
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

from calex_steps.calibration import calibrate_cascade, reference_precision
from calex_steps.cascade import run_cascade
from calex_steps.cascade.signals import max_softmax
from calex_steps.cascade.sweep import ExitCosts, ExitRule, margin_grid, per_class_exits, sweep
from calex_steps.data.splits import pool_resamples, redraw_partition
from calex_steps.errors import CalexError
from calex_steps.stages.sweep_margins import main, run_sweep_margins

MARGINS = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8]
COSTS = ExitCosts([10, 25, 45, 110], 100)  # exit at branch 1, 2, 3, backbone (= total + heads)
FULL, CASCADE = ExitRule(calibration="full"), ExitRule(calibration="cascade")


def synthetic_split(rng, n: int, num_classes: int = 5, branch_acc=(0.5, 0.65, 0.8)) -> dict:
    """Branch outputs whose confidence tracks correctness, rounded so that ties occur, and
    logits whose argmax is the prediction."""
    labels = rng.integers(0, num_classes, n)
    backbone = np.where(rng.random(n) < 0.85, labels, rng.integers(0, num_classes, n))
    confs, preds, logits = [], [], []
    for acc in branch_acc:
        right = rng.random(n) < acc
        pred = np.where(right, labels, (labels + rng.integers(1, num_classes, n)) % num_classes)
        conf = np.clip(0.45 + 0.2 * right + rng.normal(0.0, 0.2, n), 0.0, 1.0)
        z = (
            rng.normal(0.0, 1.0, (n, num_classes))
            + np.eye(num_classes)[pred] * (2 + 2 * right)[:, None]
        )
        confs.append(np.round(conf, 2).astype(np.float32))
        preds.append(pred)
        logits.append(z.astype(np.float32))
    return {
        "confs": confs,
        "preds": preds,
        "logits": logits,
        "labels": labels,
        "backbone_pred": backbone,
        "num_classes": num_classes,
    }


def test_hand_case_table_and_per_class_counts():
    val = {
        "confs": [np.array([0.9, 0.8, 0.7, 0.6])],
        "preds": [np.array([0, 0, 0, 0])],
        "labels": np.array([0, 0, 1, 0]),
        "backbone_pred": np.array([0, 0, 1, 0]),
        "num_classes": 2,
    }
    test = {
        "confs": [np.array([0.95, 0.75, 0.65, 0.9])],
        "preds": [np.array([0, 0, 0, 1])],
        "labels": np.array([0, 1, 0, 1]),
        "backbone_pred": np.array([0, 1, 1, 1]),
        "num_classes": 2,
    }
    costs = ExitCosts([30, 120], 100, times_ms=[2.0, 9.0], backbone_ms=8.0)
    table, thresholds, exits = sweep(val, test, [0.2], FULL, costs)
    # Target 0.8 for class 0: T = 0.7; class 1 never predicted by branch 1: T = 1.
    np.testing.assert_array_equal(thresholds["m0.2"], [[0.7, 1.0]])
    # Samples 0 and 1 exit at branch 1 (1 right), 2 and 3 go to the backbone (1 right).
    np.testing.assert_array_equal(exits["exit_branch"], [[0, 0, 1, 1]])
    np.testing.assert_array_equal(exits["final_pred"], [[0, 0, 1, 1]])
    expected = {
        "margin": 0.2,
        "accuracy": 0.5,
        "fr": 0.25,
        "lr": 1 - 5.5 / 8.0,  # half the samples at 2 ms, half at 9 ms
        "backbone_accuracy": 0.75,
        "exit_frac_1": 0.5,
        "exit_frac_backbone": 0.5,
        "mean_macs": 75.0,
        "mean_ms": 5.5,
    }
    assert list(table.columns) == list(expected)
    np.testing.assert_allclose(table.iloc[0].to_numpy(), list(expected.values()))
    np.testing.assert_array_equal(exits["costs"], [30, 120])
    np.testing.assert_array_equal(exits["signal"], [test["confs"][0]])

    counts = per_class_exits(exits, num_branches=1, num_classes=2)
    assert list(counts.columns) == ["margin", "branch", "class", "count"]
    assert counts[["branch", "class", "count"]].to_numpy().tolist() == [
        [1, 0, 1],
        [1, 1, 1],
        [2, 0, 1],
        [2, 1, 1],
    ]


def test_fr_grows_with_margin_under_full_calibration():
    rng = np.random.default_rng(0)
    val, test = synthetic_split(rng, 3000), synthetic_split(rng, 3000)
    table, thresholds, exits = sweep(val, test, MARGINS, FULL, COSTS)
    fr = table["fr"].to_numpy()
    assert np.all(np.diff(fr) >= 0) and fr[-1] > fr[0] + 0.3
    fracs = table[["exit_frac_1", "exit_frac_2", "exit_frac_3", "exit_frac_backbone"]]
    np.testing.assert_allclose(fracs.sum(axis=1), 1.0)
    np.testing.assert_allclose(table["mean_macs"], (1 - fr) * 100)
    assert table["lr"].isna().all() and table["mean_ms"].isna().all()  # nothing measured
    assert exits["exit_branch"].shape == (8, 3000) and sorted(thresholds) == sorted(
        f"m{m:g}" for m in MARGINS
    )
    # Row 3 (m = 0.2) recomputed from the building blocks.
    ref = reference_precision(val["backbone_pred"], val["labels"], 5)
    thr = calibrate_cascade(val["confs"], val["preds"], val["labels"], ref, 0.2, 5, False)
    exit_branch, final_pred = run_cascade(test["confs"], test["preds"], thr, test["backbone_pred"])
    row = table.iloc[3]
    assert row["accuracy"] == pytest.approx(np.mean(final_pred == test["labels"]))
    assert row["fr"] == pytest.approx(1 - np.mean(np.take(COSTS.macs, exit_branch)) / 100)
    assert row["backbone_accuracy"] == pytest.approx(
        np.mean(test["backbone_pred"] == test["labels"])
    )
    assert row["exit_frac_2"] == pytest.approx(np.mean(exit_branch == 1))


def test_cascade_calibration_changes_later_branches_only():
    rng = np.random.default_rng(1)
    val, test = synthetic_split(rng, 2000), synthetic_split(rng, 2000)
    _, full, _ = sweep(val, test, [0.2], FULL, COSTS)
    _, aware, _ = sweep(val, test, [0.2], CASCADE, COSTS)
    np.testing.assert_array_equal(full["m0.2"][0], aware["m0.2"][0])
    assert not np.array_equal(full["m0.2"][1:], aware["m0.2"][1:])


def test_matched_loses_less_than_cpm_at_the_same_margin():
    rng = np.random.default_rng(2)
    val, test = synthetic_split(rng, 4000), synthetic_split(rng, 4000)
    cpm, _, _ = sweep(val, test, [0.05], CASCADE, COSTS)
    matched, _, _ = sweep(
        val, test, [0.05], ExitRule(target="matched", calibration="cascade"), COSTS
    )
    loss = lambda t: t["backbone_accuracy"][0] - t["accuracy"][0]  # noqa: E731
    assert loss(matched) < loss(cpm) and loss(matched) < 0.05 * matched["fr"][0] + 0.01


def test_global_threshold_is_one_minus_the_margin_times_the_top():
    rng = np.random.default_rng(3)
    val, test = synthetic_split(rng, 500), synthetic_split(rng, 500)
    rule = ExitRule(signal="max_softmax", thresholds="global")
    table, thresholds, exits = sweep(val, test, [0.1, 0.5], rule, COSTS)
    np.testing.assert_array_equal(thresholds["m0.1"], np.full((3, 5), 0.9))
    signals = [max_softmax(z) for z in test["logits"]]
    preds = [z.argmax(axis=1) for z in test["logits"]]
    want, _ = run_cascade(signals, preds, [np.full(5, 0.5)] * 3, test["backbone_pred"])
    np.testing.assert_array_equal(exits["exit_branch"][1], want)
    np.testing.assert_allclose(exits["signal"], signals)
    patience = ExitRule(signal="patience", thresholds="global")
    _, thresholds, exits = sweep(val, test, [0.1], patience, COSTS)
    np.testing.assert_allclose(thresholds["m0.1"], 2.7)  # top = 3 branches
    # t = 2.7: only three agreeing branches release a sample, at branch 3.
    agree = (preds[0] == preds[1]) & (preds[1] == preds[2])
    np.testing.assert_array_equal(exits["exit_branch"][0], np.where(agree, 2, 3))


def test_temperature_is_fitted_on_calibration_and_recorded():
    rng = np.random.default_rng(4)
    val, test = synthetic_split(rng, 1500), synthetic_split(rng, 1500)
    rule = ExitRule(signal="entropy", calibration="full", temperature_scaling=True)
    _, thresholds, exits = sweep(val, test, [0.1], rule, COSTS)
    temps = thresholds["temperature"]
    assert temps.shape == (3,) and np.all(temps > 0) and len(set(temps.round(4))) == 3
    assert list(thresholds)[-1] == "temperature"  # margin keys first
    with pytest.raises(CalexError, match="does not read them"):
        ExitRule(signal="patience", temperature_scaling=True)


def test_frontier_grid_joins_the_paper_margins_with_the_dense_ones():
    grid = margin_grid([0.2, 0.01], {"low": 0.001, "high": 0.5, "count": 4})
    assert grid == [0.001, 0.00794, 0.01, 0.063, 0.2, 0.5]
    assert margin_grid([0.1, 0.2], {"low": 0.1, "high": 0.2, "count": 2}) == [0.1, 0.2]
    assert margin_grid([0.3], {"low": 0.001, "high": 0.5, "count": 0}) == [0.3]


@pytest.mark.parametrize(
    ("margins", "rule", "costs", "message"),
    [
        ([0.1], {"calibration": "survivors"}, COSTS, "calibration 'survivors'"),
        ([0.1], {"target": "precision"}, COSTS, "calibration target 'precision'"),
        ([0.1, 0.1], {}, COSTS, "distinct"),
        ([0.1], {}, ExitCosts([10, 25, 45], 100), "need 4 exit costs"),
        (["low"], {}, COSTS, "list of numbers"),
    ],
)
def test_sweep_rejects_bad_arguments(margins, rule, costs, message):
    rng = np.random.default_rng(2)
    split = synthetic_split(rng, 50)
    with pytest.raises(CalexError, match=re.escape(message)):
        sweep(split, split, margins, ExitRule(**rule), costs)


# ---- entry point ---------------------------------------------------------------------------

STAGE_MACS = {"layer1": 100, "layer2": 200, "layer3": 300, "total": 400}
HEAD_MACS = [7, 5, 3]
OUTPUTS = ("sweep.csv", "thresholds.npz", "exits.npz", "per_class.csv", "frontier.csv")
FLAGS = ("--out-table", "--out-thresholds", "--out-exits", "--out-per-class", "--out-frontier")


def write_inputs(tmp_path, rng, meta_overrides=None):
    """features.h5 + three branch files built from synthetic splits; returns the paths."""
    splits = {"val": synthetic_split(rng, 400, 4), "test": synthetic_split(rng, 300, 4)}
    features = tmp_path / "features.h5"
    with h5py.File(features, "w") as f:
        f.attrs.update(
            features_id="abc123",
            stage_macs=json.dumps(STAGE_MACS),
            attach_points=json.dumps(["layer1", "layer2", "layer3"]),
        )
        for name, split in splits.items():
            logits = rng.normal(0.0, 1.0, (len(split["labels"]), 4)).astype(np.float32)
            logits[np.arange(len(logits)), split["backbone_pred"]] += 10.0  # argmax = backbone
            f.create_dataset(f"{name}/labels", data=split["labels"])
            f.create_dataset(f"{name}/logits", data=logits)
    paths = []
    for b in range(3):
        meta = {"recipe": "noalign", "seed": 0, "branch": b + 1, "features_id": "abc123"}
        meta.update(head_macs=HEAD_MACS[b], **(meta_overrides or {}).get(b, {}))
        arrays = {
            f"{n}_{k[:-1] if k != 'logits' else k}": s[k][b]
            for n, s in splits.items()
            for k in ("confs", "preds", "logits")
        }
        np.savez(tmp_path / f"branch{b + 1}.npz", meta=np.array(json.dumps(meta)), **arrays)
        paths.append(tmp_path / f"branch{b + 1}.npz")
    return features, paths, splits


def outputs(tmp_path, tag):
    return [tmp_path / f"{tag}_{n}" for n in OUTPUTS]


def argv_for(features, branches, settings, outs, extra=()):
    argv = ["--features", str(features), "--branches", *map(str, branches)]
    argv += ["--settings", json.dumps(settings), *extra]
    for flag, path in zip(FLAGS, outs, strict=True):
        argv += [flag, str(path)]
    return argv


def test_entry_point_end_to_end_and_byte_identical(tmp_path):
    features, branches, splits = write_inputs(tmp_path, np.random.default_rng(3))
    dense = {"low": 0.002, "high": 0.9, "count": 12}
    settings = {"margins": MARGINS, "dense": dense, "calibration": "cascade"}
    for tag in ("a", "b"):
        assert main(argv_for(features, branches, settings, outputs(tmp_path, tag))) == 0
    table_a, thr_a, exits_a, per_class_a, frontier_a = outputs(tmp_path, "a")
    for a, b in zip(outputs(tmp_path, "a"), outputs(tmp_path, "b"), strict=True):
        if a.suffix == ".csv":
            assert a.read_bytes() == b.read_bytes()

    text = table_a.read_text().splitlines()
    assert text[0] == (
        "margin,accuracy,fr,lr,backbone_accuracy,exit_frac_1,exit_frac_2,exit_frac_3,"
        "exit_frac_backbone,mean_macs,mean_ms"
    )
    assert text[1].startswith("0.010000,") and len(text) == 9
    # Exit costs by the cascade.cascade_cost contract: stage MACs + heads so far.
    costs = ExitCosts([107, 212, 315, 415], 400)
    grid = margin_grid(MARGINS, dense)
    want, _, _ = sweep(splits["val"], splits["test"], grid, CASCADE, costs)
    frontier = pd.read_csv(frontier_a)
    assert len(frontier) == len(grid) == 20 and frontier["margin"].is_monotonic_increasing
    np.testing.assert_allclose(frontier.to_numpy(), want.to_numpy(), atol=1e-6)
    paper = frontier[frontier["margin"].isin(MARGINS)].reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.read_csv(table_a), paper)

    with np.load(thr_a) as thr:
        assert sorted(thr.files) == sorted(f"m{m:g}" for m in grid)
        assert thr["m0.2"].shape == (3, 4)
    with np.load(exits_a) as ex:
        assert ex["exit_branch"].shape == (20, 300) and ex["final_pred"].shape == (20, 300)
        assert ex["exit_branch"].dtype == np.int8
        np.testing.assert_array_equal(ex["labels"], splits["test"]["labels"])
        np.testing.assert_allclose(ex["margins"], grid)
        np.testing.assert_array_equal(ex["costs"], [107, 212, 315, 415])
        assert ex["total_macs"] == 400 and np.isnan(ex["backbone_ms"])
        assert int(ex["split"]) == 0 and not bool(ex["redrawn"])
        np.testing.assert_array_equal(ex["test_index"], 400 + np.arange(300))
    counts = pd.read_csv(per_class_a)  # the paper's margins only
    assert len(counts) == 8 * 4 * 4
    assert counts.groupby("margin")["count"].sum().tolist() == [300] * 8


def test_signal_recipe_reads_the_branch_logits(tmp_path):
    features, branches, splits = write_inputs(tmp_path, np.random.default_rng(6))
    settings = {"margins": [0.05, 0.3], "exit_signal": "top2_gap", "thresholds": "global"}
    outs = outputs(tmp_path, "g")
    table = run_sweep_margins(features, branches, settings, *outs[:4])
    assert (tmp_path / "frontier.csv").exists()  # by default beside the sweep table
    rule = ExitRule(signal="top2_gap", thresholds="global")
    want, _, _ = sweep(
        splits["val"], splits["test"], [0.05, 0.3], rule, ExitCosts([107, 212, 315, 415], 400)
    )
    np.testing.assert_allclose(table.to_numpy(), want.to_numpy())
    with np.load(outs[1]) as thr:
        np.testing.assert_allclose(thr["m0.3"], 0.7)


def test_segments_give_the_latency_reduction(tmp_path):
    features, branches, _ = write_inputs(tmp_path, np.random.default_rng(7))
    segments = tmp_path / "segments.json"
    per_batch = {
        "segments_ms": [1.0, 1.0, 2.0],
        "tail_ms": 1.0,
        "backbone_ms": 4.5,
        "heads_ms": {"augmented": [0.5, 0.5, 0.5], "basic": [0.1, 0.1, 0.1]},
    }
    segments.write_text(
        json.dumps(
            {
                "device": "cpu",
                "threads": 2,
                "torch": "2.14.1",
                "batch_sizes": [1, 32],
                "attach_points": ["layer1", "layer2", "layer3"],
                "per_batch": {"32": per_batch},
            }
        )
    )
    settings = {
        "margins": MARGINS,
        "calibration": "full",
        "lr_batch_size": 32,
        "latency_head": "augmented",
    }
    outs = outputs(tmp_path, "s")
    assert main(argv_for(features, branches, settings, outs, ["--segments", str(segments)])) == 0
    table = pd.read_csv(outs[0])
    fracs = table[["exit_frac_1", "exit_frac_2", "exit_frac_3", "exit_frac_backbone"]]
    mean_ms = fracs.to_numpy() @ np.array([1.5, 3.0, 5.5, 6.5])
    np.testing.assert_allclose(table["mean_ms"], mean_ms, atol=1e-5)  # 6 decimals in the CSV
    np.testing.assert_allclose(table["lr"], 1 - mean_ms / 4.5, atol=1e-5)
    with np.load(outs[2]) as ex:
        np.testing.assert_allclose(ex["times_ms"], [1.5, 3.0, 5.5, 6.5])
        assert ex["backbone_ms"] == 4.5
    settings["lr_batch_size"] = 256
    with pytest.raises(CalexError, match=re.escape("no batch size 256 (measured: ['32'])")):
        run_sweep_margins(features, branches, settings, *outputs(tmp_path, "t"), segments)


def test_agree_needs_no_calibration_labels(tmp_path):
    features, branches, _ = write_inputs(tmp_path, np.random.default_rng(8))
    unlabelled = tmp_path / "unlabelled.h5"
    shutil.copy(features, unlabelled)
    with h5py.File(unlabelled, "a") as f:
        del f["val/labels"]
    settings = {"margins": MARGINS, "calibration": "cascade", "calibration_target": "agree"}
    run_sweep_margins(features, branches, settings, *outputs(tmp_path, "l"))
    run_sweep_margins(unlabelled, branches, settings, *outputs(tmp_path, "u"))
    with np.load(outputs(tmp_path, "l")[1]) as a, np.load(outputs(tmp_path, "u")[1]) as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    settings["calibration_target"] = "matched"
    with pytest.raises(CalexError, match="use calibration_target: agree"):
        run_sweep_margins(unlabelled, branches, settings, *outputs(tmp_path, "x"))
    settings |= {"calibration_target": "agree", "split": 1}
    with pytest.raises(CalexError, match="needs the calibration labels"):
        run_sweep_margins(unlabelled, branches, settings, *outputs(tmp_path, "y"))


def test_agree_on_a_real_run_without_calibration_labels(tiny_cascade_run, tmp_path):
    root, run = tiny_cascade_run["root"], tiny_cascade_run["run"]
    unlabelled = tmp_path / "features.h5"
    shutil.copy(root / "features.h5", unlabelled)
    with h5py.File(unlabelled, "a") as f:
        f["val/labels"][...] = -1  # unknown, as an unlabelled calibration set stores them
    branches = [run / f"branch{b}.npz" for b in (1, 2, 3)]
    settings = {"margins": MARGINS, "calibration": "cascade", "calibration_target": "agree"}
    table = run_sweep_margins(root / "features.h5", branches, settings, *outputs(tmp_path, "l"))
    run_sweep_margins(unlabelled, branches, settings, *outputs(tmp_path, "u"))
    with np.load(outputs(tmp_path, "l")[1]) as a, np.load(outputs(tmp_path, "u")[1]) as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    assert table["fr"].max() > 0.05  # the branches do release samples


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({1: {"features_id": "old"}}, "branch2.npz was trained on features 'old'"),
        ({2: {"recipe": "calexnet"}}, "branch3.npz has recipe 'calexnet'"),
        ({1: {"seed": 1}}, "branch2.npz has seed 1"),
        ({0: {"branch": 2}}, "branch1.npz is branch 2, passed as 1"),
    ],
)
def test_entry_point_rejects_mismatched_branch_files(tmp_path, overrides, message):
    features, branches, _ = write_inputs(tmp_path, np.random.default_rng(4), overrides)
    settings = {"margins": [0.1], "calibration": "full"}
    with pytest.raises(CalexError, match=re.escape(message)):
        run_sweep_margins(features, branches, settings, *outputs(tmp_path, "x"))
    assert not any(p.exists() for p in outputs(tmp_path, "x"))


def test_entry_point_reports_errors_in_one_line(tmp_path, capsys):
    features, branches, _ = write_inputs(tmp_path, np.random.default_rng(5))
    settings = {"margins": [0.1], "calibration": "full"}
    argv = argv_for(features, branches[:2], settings, outputs(tmp_path, "y"))
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("calex error: got 2 branch files") and "one --branches file" in err
    bad = argv_for(
        features, branches, {"margins": [0.1], "calbration": "full"}, outputs(tmp_path, "y")
    )
    assert main(bad) == 1
    assert "calbration" in capsys.readouterr().err


def test_split_redraws_the_held_out_samples_with_the_same_sizes(tmp_path):
    rng = np.random.default_rng(0)
    val_labels, test_labels = rng.integers(0, 4, 300), rng.integers(0, 4, 200)
    same_val, same_test = redraw_partition(val_labels, test_labels, 0, seed=5)
    assert np.array_equal(same_val, np.arange(300))
    assert np.array_equal(same_test, 300 + np.arange(200))
    cal, test = redraw_partition(val_labels, test_labels, 2, seed=5)
    assert len(cal) == 300 and len(test) == 200 and not set(cal) & set(test)
    assert np.array_equal(test, redraw_partition(val_labels, test_labels, 2, seed=5)[1])
    assert not np.array_equal(test, redraw_partition(val_labels, test_labels, 3, seed=5)[1])
    pooled = np.concatenate([val_labels, test_labels])
    # stratified: each class keeps its share of the pool in the test part (within one sample)
    for c in range(4):
        share = (pooled == c).sum() * 200 / 500
        assert abs((pooled[test] == c).sum() - share) <= 1


@pytest.mark.parametrize("redraw", [True, False])
def test_the_split_records_its_partition(tmp_path, redraw):
    features, branches, splits = write_inputs(tmp_path, np.random.default_rng(9))
    settings = {
        "margins": [0.1],
        "calibration": "full",
        "split": 2,
        "split_seed": 7,
        "redraw": redraw,
    }
    outs = outputs(tmp_path, "r")
    run_sweep_margins(features, branches, settings, *outs)
    _, test_pos = redraw_partition(splits["val"]["labels"], splits["test"]["labels"], 2, 7)
    with np.load(outs[2]) as ex:
        assert int(ex["split"]) == 2 and int(ex["split_seed"]) == 7
        assert bool(ex["redrawn"]) == redraw
        want = test_pos if redraw else 400 + np.arange(300)  # a retrained split keeps its own
        np.testing.assert_array_equal(ex["test_index"], want)
        pooled = np.concatenate([splits["val"]["labels"], splits["test"]["labels"]])
        np.testing.assert_array_equal(ex["labels"], pooled[want])


def test_recalibrated_curves_are_sweeps_of_the_resampled_pool(tmp_path):
    # Resample r of the held-out pool counts each image w[r, i] times: the calibration
    # part recalibrates as if its images were repeated that often, and the test part is
    # read with the same counts (one image, one weight, whichever part holds it).
    features, branches, splits = write_inputs(tmp_path, np.random.default_rng(11))
    settings = {"margins": [0.05, 0.2, 0.6], "calibration": "cascade", "split": 2,
                "split_seed": 7, "bootstrap_seed": 4, "calibration_resamples": 3}  # fmt: skip
    outs = outputs(tmp_path, "w")
    run_sweep_margins(features, branches, settings, *outs)
    val_pos, test_pos = redraw_partition(splits["val"]["labels"], splits["test"]["labels"], 2, 7)
    pool = {k: v if k == "num_classes" else ([np.concatenate([a, b]) for a, b in
            zip(v, splits["test"][k], strict=True)] if isinstance(v, list) else
            np.concatenate([v, splits["test"][k]])) for k, v in splits["val"].items()}  # fmt: skip
    weights = pool_resamples(700, [1, 2, 3], seed=4)
    costs = ExitCosts([107, 212, 315, 415], 400)
    with np.load(outs[2]) as ex:
        assert int(ex["pool_size"]) == 700 and int(ex["bootstrap_seed"]) == 4
        assert ex["recal_accuracy"].shape == (3, 3) and np.isnan(ex["recal_lr"]).all()
        for r in range(3):
            rows = val_pos[np.repeat(np.arange(val_pos.size), weights[r, val_pos])]
            cal = {k: v if k == "num_classes" else ([a[rows] for a in v] if isinstance(v, list)
                   else v[rows]) for k, v in pool.items()}  # fmt: skip
            test = {k: v if k == "num_classes" else ([a[test_pos] for a in v] if
                    isinstance(v, list) else v[test_pos]) for k, v in pool.items()}  # fmt: skip
            _, _, want = sweep(cal, test, [0.05, 0.2, 0.6], CASCADE, costs)
            w = weights[r, test_pos]
            right = want["final_pred"] == want["labels"]
            np.testing.assert_allclose(ex["recal_accuracy"][r], right @ w / w.sum())
            spent = np.asarray(costs.macs)[want["exit_branch"]] @ w / (w.sum() * 400)
            np.testing.assert_allclose(ex["recal_fr"][r], 1 - spent)
    # A global threshold reads no calibration data: nothing to recalibrate.
    run_sweep_margins(features, branches, {**settings, "thresholds": "global"}, *outs)
    with np.load(outs[2]) as ex:
        assert ex["recal_accuracy"].shape == (0, 3)
