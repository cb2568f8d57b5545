"""Calibration targets (docs/method.md#calibration, docs/calibration.md): hand cases, brute-force
references, cascade calibration, many margins at once."""

import re

import numpy as np
import pytest

from calex_steps.calibration import (
    agree_thresholds,
    calibrate_cascade,
    calibrate_margins,
    cpm_thresholds,
    get_target,
    matched_thresholds,
    reference_precision,
)
from calex_steps.errors import CalexError


def brute_force_cpm(conf, pred, labels, ref, margin, num_classes):
    """CPM (docs/method.md#calibration) read literally: loops over classes and thresholds."""
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


# ---- matched and agree (docs/calibration.md) -------------------------------------------


def brute_force_target(conf, pred, labels, backbone, margin, num_classes, rule, top=1.0):
    """The shared candidate rules read literally, with ``rule(exits)`` deciding a set."""
    out = np.full(num_classes, top)
    for i in range(num_classes):
        cand = [j for j in range(len(conf)) if pred[j] == i]
        for t in sorted({float(conf[j]) for j in cand} | {top}):
            exits = [j for j in cand if float(conf[j]) > t]
            if exits and rule(exits, pred, labels, backbone, 1.0 - margin):
                out[i] = t
                break
    return out


def matched_rule(exits, pred, labels, backbone, keep):
    hits = sum(pred[j] == labels[j] for j in exits)
    return hits >= keep * sum(backbone[j] == labels[j] for j in exits)


def agree_rule(exits, pred, labels, backbone, keep):
    return sum(pred[j] == backbone[j] for j in exits) >= keep * len(exits)


def random_case(rng):
    n, c = int(rng.integers(1, 60)), int(rng.integers(1, 5))
    levels = int(rng.integers(2, 12))
    conf = (rng.integers(0, levels + 1, n) / levels).astype(np.float32)
    pred = rng.integers(0, c, n)
    labels = np.where(rng.random(n) < 0.6, pred, rng.integers(0, c, n))
    backbone = np.where(rng.random(n) < 0.7, labels, rng.integers(0, c, n))
    margin = float(rng.choice([0.0, 0.01, 0.1, 0.25, 0.5, 0.8, 1.0]))
    return conf, pred, labels, backbone, margin, c


@pytest.mark.parametrize(
    ("function", "rule"), [(matched_thresholds, matched_rule), (agree_thresholds, agree_rule)]
)
def test_targets_match_brute_force_on_random_cases_with_ties(function, rule):
    rng = np.random.default_rng(3)
    for case in range(300):
        conf, pred, labels, backbone, margin, c = random_case(rng)
        got = function(conf, pred, labels, backbone, margin, c)
        want = brute_force_target(conf, pred, labels, backbone, margin, c, rule)
        np.testing.assert_array_equal(got, want, err_msg=f"case {case}")


def test_matched_compares_with_the_backbone_on_the_released_samples():
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    pred = np.zeros(5, np.int64)
    labels = np.array([0, 1, 0, 1, 1])  # the branch is right on 0.9 and 0.7
    backbone = np.array([0, 1, 0, 0, 0])  # the backbone on 0.9, 0.8 and 0.7
    # t = 0.5 releases the four above it: branch right 2, backbone 3; 2 >= 0.66 * 3.
    assert matched_thresholds(conf, pred, labels, backbone, 0.34, 2)[0] == 0.5
    # At m = 0.3, 2 < 0.7 * 3 above 0.5 and 0.6, 1 < 0.7 * 2 above 0.7; 1 >= 0.7 above 0.8.
    assert matched_thresholds(conf, pred, labels, backbone, 0.3, 2)[0] == 0.8
    # A backbone wrong on the same samples as the branch: nothing is lost even at m = 0.
    assert matched_thresholds(conf, pred, labels, pred, 0.0, 2)[0] == 0.5


def test_agree_reads_no_labels():
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    pred = np.array([1, 1, 1, 1])
    backbone = np.array([1, 1, 0, 1])
    # The branch agrees with the backbone on 2 of the 3 samples above 0.6, on both above 0.7.
    assert agree_thresholds(conf, pred, None, backbone, 0.0, 2)[1] == 0.7
    assert agree_thresholds(conf, pred, None, backbone, 0.34, 2)[1] == 0.6
    assert agree_thresholds(conf, pred, None, backbone, 0.34, 2)[0] == 1.0  # never predicted
    with pytest.raises(CalexError, match="needs the calibration labels"):
        matched_thresholds(conf, pred, None, backbone, 0.1, 2)


@pytest.mark.parametrize("target", ["cpm", "matched", "agree"])
@pytest.mark.parametrize("cascade_aware", [False, True])
def test_many_margins_at_once_equal_one_margin_at_a_time(target, cascade_aware):
    rng = np.random.default_rng(4)
    n, c = 400, 4
    labels = rng.integers(0, c, n)
    backbone = np.where(rng.random(n) < 0.8, labels, rng.integers(0, c, n))
    preds = [np.where(rng.random(n) < acc, labels, rng.integers(0, c, n)) for acc in (0.5, 0.7)]
    confs = [np.round(rng.random(n), 2) for _ in preds]
    margins = [0.0, 0.01, 0.1, 0.3, 0.8]
    single = {"cpm": cpm_thresholds, "matched": matched_thresholds, "agree": agree_thresholds}
    ref = reference_precision(backbone, labels, c)
    got = calibrate_margins(
        confs,
        preds,
        margins,
        get_target(target),
        c,
        cascade_aware=cascade_aware,
        labels=labels,
        backbone_pred=backbone,
    )
    for row, margin in enumerate(margins):
        keep = np.ones(n, dtype=bool)
        for b, (conf, pred) in enumerate(zip(confs, preds, strict=True)):
            other = ref if target == "cpm" else backbone[keep]
            want = single[target](conf[keep], pred[keep], labels[keep], other, margin, c)
            np.testing.assert_array_equal(got[row, b], want, err_msg=f"m={margin} branch {b}")
            if cascade_aware:
                keep &= ~(conf > want[pred])


@pytest.mark.parametrize("target", ["cpm", "matched", "agree"])
@pytest.mark.parametrize("cascade_aware", [False, True])
def test_reweighted_sets_calibrate_as_the_resampled_sets_do(target, cascade_aware):
    # A bootstrap resample counts a sample 0, 1, 2... times: calibrating with those counts
    # as weights must give the thresholds of the resampled set itself (rows repeated),
    # CPM's reference precision included, for several resamples at once.
    rng = np.random.default_rng(5)
    n, c = 300, 3
    labels = rng.integers(0, c, n)
    backbone = np.where(rng.random(n) < 0.8, labels, rng.integers(0, c, n))
    preds = [np.where(rng.random(n) < acc, labels, rng.integers(0, c, n)) for acc in (0.5, 0.7)]
    confs = [np.round(rng.random(n), 2) for _ in preds]
    margins = [0.0, 0.05, 0.2, 0.6]
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(3)])
    kw = {"cascade_aware": cascade_aware}
    got = calibrate_margins(confs, preds, margins, get_target(target), c, labels=labels,
                            backbone_pred=backbone, weights=weights, **kw)  # fmt: skip
    assert got.shape == (3, len(margins), 2, c)
    for r, w in enumerate(weights):
        rows = np.repeat(np.arange(n), w)
        want = calibrate_margins([x[rows] for x in confs], [p[rows] for p in preds], margins,
                                 get_target(target), c, labels=labels[rows],
                                 backbone_pred=backbone[rows], **kw)  # fmt: skip
        np.testing.assert_array_equal(got[r], want)
    ref = reference_precision(backbone, labels, c, weights)
    rows = np.repeat(np.arange(n), weights[1])
    np.testing.assert_allclose(ref[1], reference_precision(backbone[rows], labels[rows], c))


def test_top_of_the_signal_range_is_the_never_exit_candidate():
    # A patience-like signal in 1..3: the top is 3, not 1.
    conf = np.array([3.0, 3.0, 2.0, 1.0])
    pred = np.zeros(4, np.int64)
    backbone = np.array([0, 0, 0, 1])

    def thresholds(labels):
        cpm = get_target("cpm")
        return calibrate_margins([conf], [pred], [0.1], cpm, 2, cascade_aware=False,
                                 labels=labels, backbone_pred=backbone, top=3.0)[0, 0]  # fmt: skip

    np.testing.assert_array_equal(thresholds(backbone), [1.0, 3.0])
    # Every exit wrong: nothing qualifies, and the answer is the top (never exit), not 1.
    np.testing.assert_array_equal(thresholds(np.ones(4, np.int64)), [3.0, 3.0])
