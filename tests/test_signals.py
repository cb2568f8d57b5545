"""Exit signals computed from branch logits and the temperature fitted per branch
(docs/calibration.md): hand cases and properties the deployable module must mirror."""

import ast
from pathlib import Path

import numpy as np
import pytest

from calex_steps.calibration.temperature import fit_temperature, nll
from calex_steps.cascade.signals import (
    entropy_score,
    logit_signals,
    max_softmax,
    patience,
    signal_top,
    top2_gap,
)
from calex_steps.errors import CalexError

LOGITS = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [10.0, 10.0, -10.0]])


def test_softmax_signals_by_hand():
    e = np.exp(2.0)
    want = [e / (e + 2), 1 / 3, 1 / (2 + np.exp(-20.0))]
    np.testing.assert_allclose(max_softmax(LOGITS), want, rtol=1e-12)
    np.testing.assert_allclose(top2_gap(LOGITS), [(e - 1) / (e + 2), 0.0, 0.0], atol=1e-12)
    p = np.array([e, 1.0, 1.0]) / (e + 2)
    h = -np.sum(p * np.log(p))
    np.testing.assert_allclose(entropy_score(LOGITS)[:2], [1 - h / np.log(3), 0.0], atol=1e-12)
    # Two equal classes: H = ln 2, so the score is 1 - ln 2 / ln 3.
    assert entropy_score(LOGITS)[2] == pytest.approx(1 - np.log(2) / np.log(3), abs=1e-7)


def test_temperature_divides_the_logits():
    np.testing.assert_allclose(max_softmax(LOGITS, 2.0), max_softmax(LOGITS / 2.0))
    np.testing.assert_allclose(entropy_score(LOGITS, 0.5), entropy_score(LOGITS * 2.0))
    # A higher temperature flattens the distribution: every signal goes down.
    for fn in (max_softmax, entropy_score, top2_gap):
        assert np.all(fn(LOGITS[:1], 3.0) < fn(LOGITS[:1], 1.0))


def test_patience_counts_the_agreeing_run_ending_at_each_branch():
    preds = [np.array([1, 1, 0, 2]), np.array([1, 0, 0, 2]), np.array([1, 0, 1, 2])]
    runs = patience(preds)
    np.testing.assert_array_equal(runs[0], [1, 1, 1, 1])
    np.testing.assert_array_equal(runs[1], [2, 1, 2, 2])
    np.testing.assert_array_equal(runs[2], [3, 2, 1, 3])
    assert signal_top("patience", 3) == 3.0 and signal_top("max_softmax", 3) == 1.0


def test_logit_signals_predict_the_argmax():
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(50, 4)) for _ in range(2)]
    signals, preds = logit_signals("max_softmax", logits, [1.0, 2.0])
    np.testing.assert_array_equal(preds[1], logits[1].argmax(axis=1))
    np.testing.assert_allclose(signals[1], max_softmax(logits[1] / 2.0))
    runs, _ = logit_signals("patience", logits)
    np.testing.assert_array_equal(runs[1], np.where(preds[1] == preds[0], 2.0, 1.0))
    with pytest.raises(CalexError, match="not computed from logits"):
        logit_signals("branch", logits)
    with pytest.raises(CalexError, match="C >= 2"):
        max_softmax(np.zeros((3, 1)))


def test_fitted_temperature_recovers_the_one_that_generated_the_labels():
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 3.0, (20000, 5))
    probs = np.exp(logits / 2.5)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = (rng.random((20000, 1)) > np.cumsum(probs, axis=1)).sum(axis=1)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.5, rel=0.05)
    assert nll(logits, labels, t) <= min(nll(logits, labels, 1.0), nll(logits, labels, 4.0))
    with pytest.raises(CalexError, match="temperature_scaling: false"):
        fit_temperature(logits, None)


def test_signals_module_stays_free_of_torch():
    source = Path(__file__).resolve().parents[1] / "calex_steps" / "cascade" / "signals.py"
    tree = ast.parse(source.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(name.split(".")[0] == "torch" for name in imported)
