"""The image-by-image check of an ONNX cascade against the simulator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calex_steps.deploy.decisions import compare_decisions
from calex_steps.errors import CalexError
from calex_steps.stages.check_onnx import run_check_onnx


def hand_exits() -> dict:
    """Two branches, two classes, five images; thresholds 0.5 (branch 1) and 0.7 (branch 2)."""
    return {
        "margins": np.array([0.1]),
        "exit_branch": np.array([[0, 1, 2, 0, 2]]),
        "final_pred": np.array([[1, 0, 1, 0, 0]]),
        "labels": np.array([1, 0, 0, 0, 0]),
        "signal": np.array(
            [[0.9, 0.2, 0.3, 0.500004, 0.1], [0.1, 0.8, 0.6, 0.9, 0.69]]
        ),  # fmt: skip
        "branch_pred": np.array([[1, 1, 0, 0, 0], [0, 0, 1, 0, 0]]),
    }


def test_differing_images_sorted_by_their_distance_to_a_threshold():
    thresholds = np.array([[0.5, 0.5], [0.7, 0.7]])
    # image 3 leaves at branch 2 instead of 1: its branch-1 signal is 4e-6 above 0.5;
    # image 4 leaves at branch 2 instead of the backbone: 0.69 is 0.01 below 0.7
    report = compare_decisions([1, 0, 1, 0, 0], [0, 1, 2, 1, 1], hand_exits(), 0.1,
                               thresholds, 1e-5)  # fmt: skip
    assert (report["differing"], report["within_tolerance"], report["beyond_tolerance"]) == (
        2,
        1,
        1,
    )
    assert report["beyond_examples"] == [
        {"image": 4, "exit": 1, "simulated_exit": 2, "pred": 0, "simulated_pred": 0}
    ]
    assert report["exit_fractions"] == [0.2, 0.6, 0.2]
    assert report["simulated_exit_fractions"] == [0.4, 0.2, 0.4]
    assert report["accuracy"] == report["simulated_accuracy"] == 0.8
    loose = compare_decisions([1, 0, 1, 0, 0], [0, 1, 2, 1, 1], hand_exits(), 0.1,
                              thresholds, 0.02)  # fmt: skip
    assert loose["beyond_tolerance"] == 0 and loose["within_tolerance"] == 2


def test_unknown_margin_and_wrong_length_are_clear_errors():
    with pytest.raises(CalexError, match="no margin 0.3"):
        compare_decisions([0] * 5, [0] * 5, hand_exits(), 0.3, np.zeros((2, 2)), 0.0)
    with pytest.raises(CalexError, match="3 answers for 5 simulated test images"):
        compare_decisions([0] * 3, [0] * 3, hand_exits(), 0.1, np.zeros((2, 2)), 0.0)


def test_check_on_the_whole_test_split(tiny_cascade_run, onnx_export, tmp_path):
    out = tmp_path / "check.json"
    report = run_check_onnx(onnx_export["model"], tiny_cascade_run["split"] / "exits.npz",
                            tiny_cascade_run["prepared"], 1e-5, out, threads=1)  # fmt: skip
    assert report["images"] == 120 and report["differing"] == 0
    assert report["recipe"] == "calexnet" and report["margin"] == 0.05
    exits = np.load(tiny_cascade_run["split"] / "exits.npz")
    row = list(exits["margins"]).index(0.05)
    assert report["accuracy"] == float(np.mean(exits["final_pred"][row] == exits["labels"]))
    assert json.loads(out.read_text()) == report


def test_check_fails_on_a_decision_far_from_its_threshold(tiny_cascade_run, onnx_export,
                                                         tmp_path):  # fmt: skip
    exits = dict(np.load(tiny_cascade_run["split"] / "exits.npz"))
    row = list(exits["margins"]).index(0.05)
    exits["exit_branch"] = exits["exit_branch"].copy()
    exits["exit_branch"][row, 7] = (exits["exit_branch"][row, 7] + 1) % 4  # a wrong simulation
    exits["signal"] = exits["signal"] + 10.0  # every signal far from every threshold
    np.savez(tmp_path / "exits.npz", **exits)
    with pytest.raises(CalexError, match="1 test images leave the ONNX cascade"):
        run_check_onnx(onnx_export["model"], tmp_path / "exits.npz",
                       tiny_cascade_run["prepared"], 1e-5, tmp_path / "check.json")  # fmt: skip
