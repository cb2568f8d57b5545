"""Temperature scaling of a branch's class logits (docs/calibration.md).

One temperature T per branch, fitted on the calibration part by minimising the mean
negative log-likelihood of softmax(z / T) against ground truth. The exit signals then
read z / T (``cascade.signals``). numpy and scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from calex_steps.errors import CalexError

T_RANGE = (0.05, 20.0)  # the search interval of T


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of softmax(logits / T) at the labels."""
    z = logits / temperature
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(z.shape[0]), labels]))


def fit_temperature(logits, labels) -> float:
    """The T in ``T_RANGE`` minimising ``nll``, searched on log T (bounded Brent).

    Args:
        logits: (N, C) class logits of one branch on the calibration part.
        labels: (N,) int ground truth.

    Returns:
        T as a float.
    """
    z = np.asarray(logits, dtype=np.float64)
    if labels is None:
        raise CalexError(
            "temperature_scaling fits T against the calibration labels, and the "
            "calibration split has none; set temperature_scaling: false"
        )
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or y.shape != (z.shape[0],) or z.shape[0] == 0:
        raise CalexError(
            f"temperature scaling needs (N, C) logits and N labels, got {z.shape} and {y.shape}"
        )
    if not np.all(np.isfinite(z)):
        raise CalexError("the branch logits hold NaN or infinite values; check the branch files")
    lo, hi = np.log(T_RANGE)
    result = minimize_scalar(
        lambda log_t: nll(z, y, float(np.exp(log_t))),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(result.x))
