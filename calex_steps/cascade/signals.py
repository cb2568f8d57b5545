"""Exit signals: the per-sample value a branch's threshold acts on (docs/calibration.md).

``branch`` is the confidence head's sigmoid at the prediction and ``ztw_ensemble`` ZTW's
ensemble probability, both read from the branch files. The others are computed here from
a branch's class logits z (for BoostNet its additive F_l) at temperature T, with the
prediction Ĉ = argmax z:

- ``max_softmax``: max_c softmax(z/T)_c;
- ``entropy``: 1 - H(softmax(z/T)) / ln C;
- ``top2_gap``: the largest minus the second-largest softmax(z/T) probability;
- ``patience``: the number of consecutive branches ending at branch l, l included,
  whose argmax equals branch l's argmax (1 .. l+1; T changes nothing).

A sample leaves at the first branch whose signal exceeds threshold[l][Ĉ] strictly. The
deployable module computes the same definitions in torch. numpy and scipy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calex_steps.errors import CalexError

FILE_SIGNALS = ("branch", "ztw_ensemble")
LOGIT_SIGNALS = ("max_softmax", "entropy", "top2_gap", "patience")
SIGNALS = FILE_SIGNALS + LOGIT_SIGNALS


def _log_probs(logits, temperature: float) -> np.ndarray:
    """(N, C) log softmax(z / T) in float64."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise CalexError(f"exit signals need (N, C) logits with C >= 2, got shape {z.shape}")
    if not temperature > 0:
        raise CalexError(f"temperature must be > 0, got {temperature}")
    z = z / temperature
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def max_softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """(N,) the largest softmax(z/T) probability."""
    return np.exp(_log_probs(logits, temperature).max(axis=1))


def entropy_score(logits, temperature: float = 1.0) -> np.ndarray:
    """(N,) 1 - H(softmax(z/T)) / ln C: 1 for a one-hot distribution, 0 for a uniform one."""
    logp = _log_probs(logits, temperature)
    entropy = -np.sum(np.exp(logp) * logp, axis=1)
    return 1.0 - entropy / np.log(logp.shape[1])


def top2_gap(logits, temperature: float = 1.0) -> np.ndarray:
    """(N,) the largest minus the second-largest softmax(z/T) probability."""
    probs = np.exp(_log_probs(logits, temperature))
    two = np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:]  # (N, 2), largest last
    return two[:, 1] - two[:, 0]


def patience(preds: Sequence) -> list[np.ndarray]:
    """Per branch l, the length of the run of branches ending at l that predict as l does.

    Args:
        preds: list over L branches of (N,) int predictions (argmax of the logits).

    Returns:
        list over L branches of (N,) float64 counts in 1 .. l+1.
    """
    runs, previous = [], None
    for pred in preds:
        pred = np.asarray(pred)
        run = (
            np.ones(pred.shape) if previous is None else np.where(pred == previous, runs[-1] + 1, 1)
        )
        runs.append(run.astype(np.float64))
        previous = pred
    return runs


def signal_top(kind: str, num_branches: int) -> float:
    """The top of a signal's range: a threshold there never releases a sample."""
    if kind not in SIGNALS:
        raise CalexError(f"exit_signal '{kind}' is not one of {list(SIGNALS)}")
    return float(num_branches) if kind == "patience" else 1.0


SOFTMAX_SIGNALS = {"max_softmax": max_softmax, "entropy": entropy_score, "top2_gap": top2_gap}


def logit_signals(
    kind: str, logits: Sequence, temperatures: Sequence[float] | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The exit signal and prediction of every branch from its class logits.

    Args:
        kind: one of ``LOGIT_SIGNALS``.
        logits: list over L branches of (N, C) logits.
        temperatures: one T per branch (None = all 1).

    Returns:
        (signals, preds): lists over L branches of (N,) float64 and (N,) int64 argmax.
    """
    if kind not in LOGIT_SIGNALS:
        raise CalexError(f"exit_signal '{kind}' is not computed from logits {list(LOGIT_SIGNALS)}")
    temps = [1.0] * len(logits) if temperatures is None else list(temperatures)
    if len(temps) != len(logits):
        raise CalexError(f"got {len(temps)} temperatures for {len(logits)} branches")
    preds = [np.asarray(z).argmax(axis=1).astype(np.int64) for z in logits]
    if kind == "patience":
        return patience(preds), preds
    fn = SOFTMAX_SIGNALS[kind]
    return [fn(z, t) for z, t in zip(logits, temps, strict=True)], preds
