"""Survivor weights and importance sampling for branch training (docs/method.md#training)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calex_steps.errors import CalexError


def survivor_weights(prev_confs: Sequence, num_samples: int | None = None) -> np.ndarray:
    """Probability that each sample survives the earlier branches, w_j = Π_k (1 − R^k_j).

    Args:
        prev_confs: list over the earlier branches k < l of (N,) confidences R^k
            at each branch's own prediction, in [0, 1].
        num_samples: N, checked against the earlier branches when given; sets
            the length of the all-ones result when ``prev_confs`` is empty.

    Returns:
        (N,) float64 weights in [0, 1]. With no earlier branch (branch 1) every
        weight is 1: ``np.ones(num_samples)``, or, without ``num_samples``, a
        0-d array holding 1.0 that broadcasts against any (N,) array.
    """
    if not prev_confs:
        shape = () if num_samples is None else (num_samples,)
        return np.ones(shape, dtype=np.float64)
    stacked = np.stack([np.asarray(c, dtype=np.float64) for c in prev_confs])  # (k, N)
    if num_samples is not None and stacked.shape[1] != num_samples:
        raise CalexError(
            f"earlier branches have {stacked.shape[1]} samples, expected {num_samples}"
        )
    if not np.all((stacked >= 0.0) & (stacked <= 1.0)):
        raise CalexError(
            "earlier-branch confidences must lie in [0, 1]; check the branch output files"
        )
    return np.prod(1.0 - stacked, axis=0)


def sample_indices(weights, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` sample indices with replacement, with probability proportional to ``weights``.

    Args:
        weights: (N,) non-negative finite weights.
        n: how many indices to draw (one epoch draws N).
        rng: the generator that makes the draw reproducible.

    Returns:
        (n,) int64 indices into ``weights``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise CalexError(f"weights must be a non-empty 1-D array, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise CalexError("sample weights must be finite and non-negative")
    total = w.sum()
    if total <= 0:
        raise CalexError(
            "every survivor weight is zero: the earlier branches release every training "
            "sample with confidence 1; use 'survivor_mode: loss' or check the earlier branches"
        )
    return rng.choice(w.size, size=n, replace=True, p=w / total).astype(np.int64)
