"""The margin sweep: the pure function on synthetic cases and the entry point end to end."""

import json
import re

import h5py
import numpy as np
import pandas as pd
import pytest

from calex_steps.calibration import calibrate_cascade, reference_precision
from calex_steps.cascade import run_cascade
from calex_steps.cascade.sweep import per_class_exits, sweep
from calex_steps.data.splits import redraw_partition
from calex_steps.errors import CalexError
from calex_steps.stages.sweep_margins import main, run_sweep_margins

MARGINS = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8]
COSTS = [10, 25, 45, 110]  # exit at branch 1, 2, 3, backbone (= total + heads)
TOTAL = 100


def synthetic_split(rng, n: int, num_classes: int = 5, branch_acc=(0.5, 0.65, 0.8)) -> dict:
    """Branch outputs whose confidence tracks correctness, rounded so that ties occur."""
    labels = rng.integers(0, num_classes, n)
    backbone = np.where(rng.random(n) < 0.85, labels, rng.integers(0, num_classes, n))
    confs, preds = [], []
    for acc in branch_acc:
        right = rng.random(n) < acc
        preds.append(
            np.where(right, labels, (labels + rng.integers(1, num_classes, n)) % num_classes)
        )
        conf = np.clip(0.45 + 0.2 * right + rng.normal(0.0, 0.2, n), 0.0, 1.0)
        confs.append(np.round(conf, 2).astype(np.float32))
    return {
        "confs": confs,
        "preds": preds,
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
    table, thresholds, exits = sweep(val, test, [0.2], "full", [30, 120], 100)
    # Target 0.8 for class 0: T = 0.7; class 1 never predicted by branch 1: T = 1.
    np.testing.assert_array_equal(thresholds["m0.2"], [[0.7, 1.0]])
    # Samples 0 and 1 exit at branch 1 (1 right), 2 and 3 go to the backbone (1 right).
    np.testing.assert_array_equal(exits["exit_branch"], [[0, 0, 1, 1]])
    np.testing.assert_array_equal(exits["final_pred"], [[0, 0, 1, 1]])
    expected = {
        "margin": 0.2,
        "accuracy": 0.5,
        "fr": 0.25,
        "backbone_accuracy": 0.75,
        "exit_frac_1": 0.5,
        "exit_frac_backbone": 0.5,
        "mean_macs": 75.0,
    }
    assert list(table.columns) == list(expected)
    np.testing.assert_allclose(table.iloc[0].to_numpy(), list(expected.values()))

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
    table, thresholds, exits = sweep(val, test, MARGINS, "full", COSTS, TOTAL)
    fr = table["fr"].to_numpy()
    assert np.all(np.diff(fr) >= 0) and fr[-1] > fr[0] + 0.3
    fracs = table[["exit_frac_1", "exit_frac_2", "exit_frac_3", "exit_frac_backbone"]]
    np.testing.assert_allclose(fracs.sum(axis=1), 1.0)
    np.testing.assert_allclose(table["mean_macs"], (1 - fr) * TOTAL)
    assert exits["exit_branch"].shape == (8, 3000) and sorted(thresholds) == sorted(
        f"m{m:g}" for m in MARGINS
    )
    # Row 3 (m = 0.2) recomputed from the building blocks.
    ref = reference_precision(val["backbone_pred"], val["labels"], 5)
    thr = calibrate_cascade(val["confs"], val["preds"], val["labels"], ref, 0.2, 5, False)
    exit_branch, final_pred = run_cascade(test["confs"], test["preds"], thr, test["backbone_pred"])
    row = table.iloc[3]
    assert row["accuracy"] == pytest.approx(np.mean(final_pred == test["labels"]))
    assert row["fr"] == pytest.approx(1 - np.mean(np.take(COSTS, exit_branch)) / TOTAL)
    assert row["backbone_accuracy"] == pytest.approx(
        np.mean(test["backbone_pred"] == test["labels"])
    )
    assert row["exit_frac_2"] == pytest.approx(np.mean(exit_branch == 1))


def test_cascade_calibration_changes_later_branches_only():
    rng = np.random.default_rng(1)
    val, test = synthetic_split(rng, 2000), synthetic_split(rng, 2000)
    _, full, _ = sweep(val, test, [0.2], "full", COSTS, TOTAL)
    _, aware, _ = sweep(val, test, [0.2], "cascade", COSTS, TOTAL)
    np.testing.assert_array_equal(full["m0.2"][0], aware["m0.2"][0])
    assert not np.array_equal(full["m0.2"][1:], aware["m0.2"][1:])


@pytest.mark.parametrize(
    ("margins", "calibration", "costs", "message"),
    [
        ([0.1], "survivors", COSTS, "calibration 'survivors'"),
        ([0.1, 0.1], "full", COSTS, "distinct"),
        ([0.1], "full", COSTS[:3], "need 4 exit costs"),
        (["low"], "full", COSTS, "list of numbers"),
    ],
)
def test_sweep_rejects_bad_arguments(margins, calibration, costs, message):
    rng = np.random.default_rng(2)
    split = synthetic_split(rng, 50)
    with pytest.raises(CalexError, match=re.escape(message)):
        sweep(split, split, margins, calibration, costs, TOTAL)


# ---- entry point ---------------------------------------------------------------------------

STAGE_MACS = {"layer1": 100, "layer2": 200, "layer3": 300, "total": 400}
HEAD_MACS = [7, 5, 3]


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
        arrays = {f"{n}_{k}": s[f"{k}s"][b] for n, s in splits.items() for k in ("conf", "pred")}
        np.savez(tmp_path / f"branch{b + 1}.npz", meta=np.array(json.dumps(meta)), **arrays)
        paths.append(tmp_path / f"branch{b + 1}.npz")
    return features, paths, splits


def outputs(tmp_path, tag):
    names = ("sweep.csv", "thresholds.npz", "exits.npz", "per_class.csv")
    return [tmp_path / f"{tag}_{n}" for n in names]


def test_entry_point_end_to_end_and_byte_identical(tmp_path):
    features, branches, splits = write_inputs(tmp_path, np.random.default_rng(3))
    settings = {"margins": MARGINS, "calibration": "cascade"}
    for tag in ("a", "b"):
        argv = ["--features", str(features), "--branches", *map(str, branches)]
        argv += ["--settings", json.dumps(settings)]
        for flag, path in zip(
            ("--out-table", "--out-thresholds", "--out-exits", "--out-per-class"),
            outputs(tmp_path, tag),
            strict=True,
        ):
            argv += [flag, str(path)]
        assert main(argv) == 0
    table_a, thr_a, exits_a, per_class_a = outputs(tmp_path, "a")
    assert table_a.read_bytes() == outputs(tmp_path, "b")[0].read_bytes()
    assert per_class_a.read_bytes() == outputs(tmp_path, "b")[3].read_bytes()

    text = table_a.read_text().splitlines()
    assert text[0] == (
        "margin,accuracy,fr,backbone_accuracy,exit_frac_1,exit_frac_2,exit_frac_3,"
        "exit_frac_backbone,mean_macs"
    )
    assert text[1].startswith("0.010000,") and len(text) == 9
    # Exit costs by the cascade.cascade_cost contract: stage MACs + heads so far.
    costs = [107, 212, 315, 415]
    want, _, _ = sweep(splits["val"], splits["test"], MARGINS, "cascade", costs, 400)
    got = pd.read_csv(table_a)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), atol=1e-6)

    with np.load(thr_a) as thr:
        assert sorted(thr.files) == sorted(f"m{m:g}" for m in MARGINS)
        assert thr["m0.2"].shape == (3, 4)
    with np.load(exits_a) as ex:
        assert ex["exit_branch"].shape == (8, 300) and ex["final_pred"].shape == (8, 300)
        np.testing.assert_array_equal(ex["labels"], splits["test"]["labels"])
        np.testing.assert_allclose(ex["margins"], MARGINS)
    counts = pd.read_csv(per_class_a)
    assert len(counts) == 8 * 4 * 4
    assert counts.groupby("margin")["count"].sum().tolist() == [300] * 8


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
    argv = ["--features", str(features), "--branches", *map(str, branches[:2])]
    argv += ["--settings", json.dumps({"margins": [0.1], "calibration": "full"})]
    for flag, path in zip(
        ("--out-table", "--out-thresholds", "--out-exits", "--out-per-class"),
        outputs(tmp_path, "y"),
        strict=True,
    ):
        argv += [flag, str(path)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("calex error: got 2 branch files") and "one --branches file" in err
    bad = argv[: argv.index("--settings") + 1] + ['{"margins": [0.1], "calbration": "full"}']
    assert main(bad + argv[argv.index("--settings") + 2 :]) == 1
    assert "calbration" in capsys.readouterr().err


def test_split_redraws_the_held_out_samples_with_the_same_sizes():
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
