"""The cascade simulator: the first releasing branch wins, else the backbone answers; many
operating points at once; per-exit times predicted from measured segment times."""

import re

import numpy as np
import pytest

from calex_steps.cascade import run_cascade
from calex_steps.cascade.simulate import segment_times
from calex_steps.errors import CalexError

THRESHOLDS = [np.array([0.5, 0.9]), np.array([0.6, 0.6]), np.array([0.2, 0.2])]


def test_first_releasing_branch_wins_and_backbone_is_the_fallback():
    confs = [
        np.array([0.7, 0.7, 0.5, 0.1, 0.8]),
        np.array([0.1, 0.65, 0.6, 0.1, 0.9]),
        np.array([0.1, 0.9, 0.3, 0.2, 0.9]),
    ]
    preds = [
        np.array([0, 1, 0, 1, 1]),  # sample 4: 0.8 < 0.9 for class 1
        np.array([1, 0, 1, 0, 0]),
        np.array([1, 1, 0, 1, 1]),
    ]
    backbone = np.array([1, 1, 1, 0, 0])
    exit_branch, final_pred = run_cascade(confs, preds, THRESHOLDS, backbone)
    # 0: branch 1 (0.7 > 0.5); 1: branch 2 (0.65 > 0.6); 2: equal to the threshold at
    # branches 1 and 2 does not release, branch 3 does; 3: 0.2 is not > 0.2 -> backbone;
    # 4: branches 2 and 3 would both release, branch 2 comes first.
    np.testing.assert_array_equal(exit_branch, [0, 1, 2, 3, 1])
    np.testing.assert_array_equal(final_pred, [0, 0, 0, 0, 0])
    assert exit_branch.dtype == np.int64 and final_pred.dtype == np.int64


def test_thresholds_of_one_never_release():
    confs = [np.array([0.99, 1.0])]
    exit_branch, final_pred = run_cascade(confs, [np.array([0, 1])], [np.ones(2)], np.array([1, 0]))
    np.testing.assert_array_equal(exit_branch, [1, 1])
    np.testing.assert_array_equal(final_pred, [1, 0])


def test_inputs_are_not_modified():
    backbone = np.array([1, 1])
    run_cascade([np.array([0.9, 0.1])], [np.array([0, 0])], [np.zeros(2)], backbone)
    np.testing.assert_array_equal(backbone, [1, 1])


def test_mismatches_raise():
    with pytest.raises(CalexError, match="one of each per branch"):
        run_cascade([np.ones(2)], [np.zeros(2, np.int64)] * 2, THRESHOLDS[:1], np.zeros(2))
    with pytest.raises(CalexError, match="branch 1 has 3 samples"):
        run_cascade([np.ones(3)], [np.zeros(3, np.int64)], THRESHOLDS[:1], np.zeros(2))
    with pytest.raises(CalexError, match="outside its 2 thresholds"):
        run_cascade([np.ones(2)], [np.array([0, 2])], THRESHOLDS[:1], np.zeros(2))


def test_many_operating_points_at_once_equal_one_at_a_time():
    rng = np.random.default_rng(0)
    confs = [rng.random(40) for _ in range(3)]
    preds = [rng.integers(0, 4, 40) for _ in range(3)]
    backbone = rng.integers(0, 4, 40)
    stacked = [rng.random((5, 4)) for _ in range(3)]  # 5 operating points
    exit_branch, final_pred = run_cascade(confs, preds, stacked, backbone)
    assert exit_branch.shape == final_pred.shape == (5, 40)
    for row in range(5):
        one = run_cascade(confs, preds, [t[row] for t in stacked], backbone)
        np.testing.assert_array_equal(exit_branch[row], one[0])
        np.testing.assert_array_equal(final_pred[row], one[1])


SEGMENTS = {
    "device": "cpu",
    "threads": 2,
    "torch": "2.14.1",
    "attach_points": ["layer1", "layer2", "layer3"],
    "batch_sizes": [1, 256],
    "per_batch": {
        "256": {
            "segments_ms": [1.0, 2.0, 3.0],
            "tail_ms": 4.0,
            "backbone_ms": 9.5,
            "heads_ms": {"augmented": [0.1, 0.2, 0.3], "basic": [0.01, 0.02, 0.03]},
        }
    },
}


def test_segment_times_by_exit_position():
    times, backbone = segment_times(SEGMENTS, ["layer1", "layer2", "layer3"], 256, "augmented")
    np.testing.assert_allclose(times, [1.1, 3.3, 6.6, 10.6])
    assert backbone == 9.5
    times, _ = segment_times(SEGMENTS, ["layer1", "layer2", "layer3"], 256, "basic")
    np.testing.assert_allclose(times, [1.01, 3.03, 6.06, 10.06])


def test_segment_times_of_exits_at_some_of_the_measured_points():
    """Exits at layer1 and layer3 only: the sample leaving at layer3 pays segments 1-3 but
    only the two heads it passed; one reaching the end pays every segment, the tail and
    both heads."""
    times, _ = segment_times(SEGMENTS, ["layer1", "layer3"], 256, "augmented")
    np.testing.assert_allclose(times, [1.0 + 0.1, 6.0 + 0.1 + 0.3, 10.0 + 0.4])
    times, _ = segment_times(SEGMENTS, ["layer2"], 256, "basic")
    np.testing.assert_allclose(times, [3.02, 10.02])


@pytest.mark.parametrize(
    ("points", "batch", "head", "message"),
    [
        (["layer1", "layer2", "layer4"], 256, "basic", "rerun measure_segments"),
        (["layer1", "layer2", "layer3"], 32, "basic", "no batch size 32 (measured: ['256'])"),
        (["layer1", "layer2", "layer3"], 256, "basic+cascade", "no head times for 'basic+cascade'"),
    ],
)
def test_segment_times_name_what_is_missing(points, batch, head, message):
    with pytest.raises(CalexError, match=re.escape(message)):
        segment_times(SEGMENTS, points, batch, head)
