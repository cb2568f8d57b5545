"""Temperature scaling of a branch's class logits (docs/calibration.md).

One temperature T per branch, fitted on the calibration part by minimising the mean
negative log-likelihood of softmax(z / T) against ground truth. The exit signals then
read z / T (``cascade.signals``). numpy and scipy only.
"""

from __future__ import annotations

import numpy as np

from calex_steps.errors import CalexError

T_RANGE = (0.05, 20.0)  # the search interval of T


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of softmax(logits / T) at the labels."""
    return _NLL(logits, labels)(temperature)


class _NLL:
    """``nll`` as a function of T alone; the shifted logits are computed once.

    With d = z - max_c z (every entry <= 0), -log softmax(z/T)_y = log sum_c exp(d_c/T) - d_y/T.
    """

    def __init__(self, logits, labels):
        z = np.asarray(logits, dtype=np.float64)
        self.d = z - z.max(axis=1, keepdims=True)  # (N, C)
        self.d_y = self.d[np.arange(z.shape[0]), labels]  # (N,)

    def __call__(self, temperature: float) -> float:
        total = np.log(np.exp(self.d / temperature).sum(axis=1))
        return float(np.mean(total - self.d_y / temperature))


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
    from scipy.optimize import minimize_scalar  # here: the sweeps import this module, few fit

    lo, hi = np.log(T_RANGE)
    loss = _NLL(z, y)
    result = minimize_scalar(
        lambda log_t: loss(float(np.exp(log_t))),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-4},  # T to about 0.01 %
    )
    return float(np.exp(result.x))
