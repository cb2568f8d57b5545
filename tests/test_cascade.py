"""The cascade simulator: the first releasing branch wins, else the backbone answers."""

import numpy as np
import pytest

from calex_steps.cascade import run_cascade
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
