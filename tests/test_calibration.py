"""CPM thresholds (SPEC section 7): hand cases, a brute-force reference, cascade calibration."""

import re

import numpy as np
import pytest

from calex_steps.calibration import calibrate_cascade, cpm_thresholds, reference_precision
from calex_steps.errors import CalexError


def brute_force_cpm(conf, pred, labels, ref, margin, num_classes):
    """SPEC section 7 read literally: loops over classes and candidate thresholds."""
    out = np.ones(num_classes)
    for i in range(num_classes):
        cand = [j for j in range(len(conf)) if pred[j] == i]
        if not cand:
            continue
        for t in sorted({float(conf[j]) for j in cand} | {1.0}):
            exits = [j for j in cand if float(conf[j]) > t]
            if not exits:
                continue
            prec = sum(labels[j] == i for j in exits) / len(exits)
            if prec > (1.0 - margin) * ref[i]:
                out[i] = t
                break
    return out


def one_class(conf, correct, ref=1.0, margin=0.2):
    """Thresholds for class 0 of a two-class problem where every sample is predicted 0."""
    conf = np.asarray(conf, dtype=np.float64)
    labels = np.where(np.asarray(correct), 0, 1)
    pred = np.zeros(len(conf), dtype=np.int64)
    return cpm_thresholds(conf, pred, labels, np.array([ref, 1.0]), margin, 2)


def test_smallest_qualifying_threshold():
    # Target 0.75: t=0.6 leaves precision 2/3, t=0.7 leaves 2/2.
    thr = one_class([0.9, 0.8, 0.7, 0.6], [True, True, False, True], margin=0.25)
    assert thr[0] == 0.7
    assert thr[1] == 1.0  # class 1 is never predicted


def test_precision_must_exceed_target_strictly():
    # At t=0.7 the exits {0.9 right, 0.8 wrong} have precision exactly 0.5.
    conf, correct = [0.9, 0.8, 0.7], [True, False, False]
    assert one_class(conf, correct, margin=0.5)[0] == 0.8
    assert one_class(conf, correct, margin=0.51)[0] == 0.7


def test_ties_exit_together():
    # The three samples at 0.8 are on the same side of every threshold: t=0.5 lets
    # all of them out (precision 2/4), t=0.8 none of them (precision 1/1).
    conf, correct = [0.9, 0.8, 0.8, 0.8, 0.5], [True, True, False, False, True]
    assert one_class(conf, correct, margin=0.1)[0] == 0.8
    assert one_class(conf, correct, margin=0.5)[0] == 0.8
    assert one_class(conf, correct, margin=0.6)[0] == 0.5


def test_no_feasible_threshold_gives_one():
    assert one_class([0.9, 0.7, 0.4], [False, False, False], margin=0.8)[0] == 1.0
    # A lone candidate can never exit: there is no observed R below it.
    assert one_class([0.9], [True], margin=0.8)[0] == 1.0


def test_target_is_relative_to_backbone_precision():
    conf, correct = [0.9, 0.8, 0.7, 0.6, 0.5], [True, False, True, False, False]
    assert one_class(conf, correct, ref=1.0, margin=0.2)[0] == 0.8  # target 0.8
    assert one_class(conf, correct, ref=0.75, margin=0.2)[0] == 0.6  # target 0.6
    assert one_class(conf, correct, ref=0.5, margin=0.2)[0] == 0.5  # target 0.4


def test_reference_precision_and_unpredicted_class():
    pred = np.array([0, 0, 0, 0, 1, 1])
    labels = np.array([0, 0, 0, 1, 1, 0])
    ref = reference_precision(pred, labels, 3)
    np.testing.assert_allclose(ref[:2], [0.75, 0.5])
    assert np.isnan(ref[2])
    # Class 2 has perfect branch precision but no reference: it never exits.
    thr = cpm_thresholds(
        np.array([0.9, 0.8, 0.7]), np.array([2, 2, 2]), np.array([2, 2, 2]), ref, 0.8, 3
    )
    np.testing.assert_array_equal(thr, [1.0, 1.0, 1.0])


def test_matches_brute_force_on_random_cases_with_ties():
    rng = np.random.default_rng(0)
    for case in range(300):
        n, c = int(rng.integers(1, 60)), int(rng.integers(1, 5))
        levels = int(rng.integers(2, 12))  # few levels -> many ties, some at 0 and 1
        conf = (rng.integers(0, levels + 1, n) / levels).astype(np.float32)
        pred = rng.integers(0, c, n)
        labels = np.where(rng.random(n) < 0.6, pred, rng.integers(0, c, n))
        ref = rng.uniform(0.3, 1.0, c)
        margin = float(rng.choice([0.0, 0.01, 0.1, 0.3, 0.6, 0.8, 1.0]))
        got = cpm_thresholds(conf, pred, labels, ref, margin, c)
        want = brute_force_cpm(conf, pred, labels, ref, margin, c)
        np.testing.assert_array_equal(got, want, err_msg=f"case {case}")


def test_float32_thresholds_release_consistently():
    # A threshold equal to an observed float32 R must not release that sample.
    rng = np.random.default_rng(1)
    conf = rng.random(500).astype(np.float32)
    pred = rng.integers(0, 3, 500)
    labels = np.where(conf > 0.4, pred, (pred + 1) % 3)
    thr = cpm_thresholds(conf, pred, labels, np.ones(3), 0.05, 3)
    assert np.all(np.isin(thr, np.r_[conf.astype(np.float64), 1.0]))
    released = conf > thr[pred]  # float32 against float64, as the cascade compares
    np.testing.assert_array_equal(released, conf.astype(np.float64) > thr[pred])
    for i in range(3):
        exits = released & (pred == i)
        assert exits.sum() > 0 and np.mean(labels[exits] == i) > 0.95
        assert not np.any(released & (pred == i) & (conf == thr[i]))


@pytest.mark.parametrize(
    ("conf", "pred", "margin", "message"),
    [
        ([0.5, np.nan], [0, 0], 0.1, "NaN"),
        ([0.5, 0.6], [0, 2], 0.1, "outside [0, 2)"),
        ([0.5, 0.6], [0, 1], 1.5, "margin 1.5"),
        ([0.5, 0.6], [0.0, 1.0], 0.1, "integer class indices"),
    ],
)
def test_bad_input_raises(conf, pred, margin, message):
    with pytest.raises(CalexError, match=re.escape(message)):
        cpm_thresholds(np.array(conf), np.array(pred), np.array([0, 1]), np.ones(2), margin, 2)


def test_cascade_aware_calibration_differs_from_full():
    labels = np.array([0, 0, 1, 0, 1, 0])
    preds = [np.zeros(6, np.int64), np.zeros(6, np.int64)]
    confs = [
        np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.05]),  # releases samples 0 and 1 at T=0.7
        np.array([0.95, 0.9, 0.85, 0.6, 0.5, 0.4]),
    ]
    ref = np.ones(2)
    full = calibrate_cascade(confs, preds, labels, ref, 0.2, 2, cascade_aware=False)
    aware = calibrate_cascade(confs, preds, labels, ref, 0.2, 2, cascade_aware=True)
    np.testing.assert_array_equal(full[0], [0.7, 1.0])
    np.testing.assert_array_equal(aware[0], [0.7, 1.0])
    # On all six samples branch 2 reaches precision 1 above 0.85; on the survivors
    # {2..5} the only confident sample (0.85) is wrong, so nothing qualifies.
    np.testing.assert_array_equal(full[1], [0.85, 1.0])
    np.testing.assert_array_equal(aware[1], [1.0, 1.0])


def test_calibrate_cascade_rejects_mismatched_lengths():
    with pytest.raises(CalexError, match="same split"):
        calibrate_cascade(
            [np.ones(3)], [np.zeros(3, np.int64)], np.zeros(4, np.int64), np.ones(2), 0.1, 2, True
        )
