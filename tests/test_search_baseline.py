"""search_baseline: the calibration-split search of the joint baselines, and its use."""

import json

import h5py
import numpy as np
import pytest
from test_train_branch import write_features
from test_train_joint import PTEENET, _load

from calex_steps.cascade.selection import calibration_halves, frontier_loss
from calex_steps.errors import CalexError
from calex_steps.stages.search_baseline import main, run_search_baseline
from calex_steps.stages.train_joint import run_train_joint
from calex_steps.training.joint_search import apply_search, search_grid

SHORT = PTEENET | {"cls_epochs": 6, "conf_epochs": 6, "lr": 2e-2}
SEARCH = {"pteenet_lambda": [0.0, 4.0]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """The tiny cache of test_train_branch, with a backbone far dearer than its heads."""
    path = tmp_path_factory.mktemp("cache") / "features.h5"
    write_features(path)
    with h5py.File(path, "a") as f:
        f.attrs["stage_macs"] = json.dumps({"layer1": 250_000, "layer2": 750_000, "total": 10**6})
    return path


def _search(features, out, settings=None):
    settings = settings or SHORT | {"search": SEARCH}
    return run_search_baseline(features, settings, 0, "cpu", out, recipe="pteenet")


def test_frontier_loss_counts_what_a_curve_does_not_reach():
    # points (FR, acc): the frontier at f is the best accuracy at an FR >= f
    loss = frontier_loss([0.2, 0.5], [0.8, 0.6], 0.9, grid=[0.0, 0.2, 0.3, 0.5, 0.6])
    assert loss.tolist() == pytest.approx([0.0, 0.1, 0.3, 0.3, 0.9])


def test_calibration_halves_are_stratified_and_disjoint():
    labels = np.repeat([0, 1, 2], [10, 6, 4])
    fit, score = calibration_halves(labels, 3)
    assert not set(fit) & set(score) and len(fit) + len(score) == 20
    assert np.bincount(labels[fit]).tolist() == [5, 3, 2]
    assert np.array_equal(calibration_halves(labels, 3)[0], fit)


def test_search_scores_every_point_on_calibration_data_and_keeps_the_best(features, tmp_path):
    out = tmp_path / "search.json"
    record = _search(features, out)
    assert json.loads(out.read_text()) == record
    assert [c["values"] for c in record["candidates"]] == [{"pteenet_lambda": v} for v in (0, 4)]
    best = min(record["candidates"], key=lambda c: c["loss_area"])
    assert record["chosen"] == best["values"] and record["splits_read"] == ["train", "val"]
    free, dear = record["candidates"]
    assert free["loss_area"] != dear["loss_area"] and 0 < free["max_fr"] <= 1
    assert not (tmp_path / "search.json.scratch").exists()


def test_search_never_reads_the_test_split(features, tmp_path):
    blind = tmp_path / "blind.h5"
    blind.write_bytes(features.read_bytes())
    with h5py.File(blind, "a") as f:
        del f["test"]  # any read of test data would now fail
    with_test = _search(features, tmp_path / "a.json")
    without = _search(blind, tmp_path / "b.json")
    assert with_test["candidates"] == without["candidates"]


def test_train_joint_trains_the_chosen_values(features, tmp_path):
    record = _search(features, tmp_path / "search.json")
    settings = SHORT | {"search": SEARCH}
    heads = [tmp_path / f"branch{b}.pt" for b in (1, 2)]
    outputs = [tmp_path / f"branch{b}.npz" for b in (1, 2)]
    run_train_joint(features, settings, 1, "cpu", heads, outputs, recipe="pteenet", search=record)
    meta = json.loads(str(_load(outputs[0])["meta"]))
    assert meta["settings"]["pteenet_lambda"] == record["chosen"]["pteenet_lambda"]
    assert "search" not in meta["settings"] and meta["search_chosen"] == record["chosen"]


def test_stale_or_missing_search_results_are_refused():
    settings = SHORT | {"search": SEARCH}
    record = {"search": {"pteenet_lambda": [1.0]}, "chosen": {"pteenet_lambda": 1.0}}
    with pytest.raises(CalexError, match="made for grid .* rerun search_baseline"):
        apply_search(settings, record)
    with pytest.raises(CalexError, match="pass its search.json"):
        apply_search(settings, None)
    with pytest.raises(CalexError, match="without 'search'"):
        apply_search(SHORT, record)
    with pytest.raises(CalexError, match=r"\['boost_r'\] cannot vary for target pteenet"):
        search_grid(SHORT | {"search": {"boost_r": [0.5]}})
    grid = search_grid(SHORT | {"search": {"pteenet_lambda": [1, 2], "lr": [0.1, 0.2]}})
    points = [(g["pteenet_lambda"], g["lr"]) for g in grid]
    assert points == [(1, 0.1), (1, 0.2), (2, 0.1), (2, 0.2)]


def test_cli_bad_settings_is_one_line(features, tmp_path, capsys):
    settings = json.dumps(SHORT)  # no search lists
    argv = ["--features", str(features), "--recipe", "pteenet", "--settings", settings]
    assert main([*argv, "--seed", "0", "--device", "cpu", "--out", str(tmp_path / "s.json")]) == 1
    assert "calex error: the recipe has no 'search' lists" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()
