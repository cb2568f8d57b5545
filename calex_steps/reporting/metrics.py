"""Statistics behind the calibration and covariate-shift figures (docs/results.md#figures).

Pure numpy: every function maps small arrays to numbers, so tests can check
each one against a hand computation.
"""

from __future__ import annotations

import numpy as np

from calex_steps.errors import CalexError


def expected_calibration_error(
    conf, correct, low: float, high: float = 1.0, bins: int = 10
) -> float:
    """ECE over ``bins`` equal-width confidence bins spanning [low, high].

    ECE = Σ_b (n_b / N) · |accuracy_b − mean confidence_b|, over non-empty bins.
    A confidence equal to ``high`` falls in the last bin; values outside
    [low, high] are clipped into the first or last bin (an exit's confidence
    is above its class threshold, hence above the branch's lowest one).

    Args:
        conf: (N,) confidences of the samples that exited at one branch.
        correct: (N,) booleans: was the exit's prediction the ground truth.
        low: left edge of the first bin (the branch's lowest threshold).
        high: right edge of the last bin.
        bins: number of bins.

    Returns:
        The ECE in [0, 1]; NaN when there are no samples.
    """
    conf = np.asarray(conf, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != correct.shape:
        raise CalexError(f"got {conf.size} confidences but {correct.size} correctness flags")
    if not (bins >= 1 and high > low):
        raise CalexError(f"ECE needs bins >= 1 and high > low, got {bins} bins on [{low}, {high}]")
    if conf.size == 0:
        return float("nan")
    edges = np.linspace(low, high, bins + 1)
    # Interior edges only: a bin is [e_b, e_{b+1}), the last one closed at ``high``.
    which = np.clip(np.searchsorted(edges[1:-1], conf, side="right"), 0, bins - 1)  # (N,)
    # Σ_b (n_b/N)|acc_b − conf_b| = Σ_b |Σ correct − Σ conf| / N over the samples of bin b.
    acc_sum = np.bincount(which, weights=correct, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    return float(np.abs(acc_sum - conf_sum).sum() / conf.size)


def class_distribution(labels, num_classes: int, pseudo_count: float = 0.0) -> np.ndarray:
    """Class frequencies of ``labels`` as a probability vector of length ``num_classes``.

    ``pseudo_count`` is added to every class before normalising (additive
    smoothing), so that a class absent from a small survivor set does not make
    a KL divergence infinite. Returns NaNs when there is nothing to count.
    """
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise CalexError(f"labels must lie in 0..{num_classes - 1}")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64) + pseudo_count
    total = counts.sum()
    return counts / total if total > 0 else np.full(num_classes, np.nan)


def kl_divergence(p, q) -> float:
    """KL(p ‖ q) = Σ_i p_i · ln(p_i / q_i) in nats; terms with p_i = 0 count 0.

    Infinite when q_i = 0 for some p_i > 0; NaN when either input holds NaN.
    """
    p = np.asarray(p, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    if p.shape != q.shape:
        raise CalexError(f"KL needs two distributions of one length, got {p.size} and {q.size}")
    if np.isnan(p).any() or np.isnan(q).any():
        return float("nan")
    support = p > 0
    with np.errstate(divide="ignore"):
        terms = p[support] * (np.log(p[support]) - np.log(q[support]))
    return float(terms.sum())


def gini_coefficient(values) -> float:
    """Gini coefficient Σ_i Σ_j |x_i − x_j| / (2 n² · mean x) of non-negative values.

    0 when all classes are equally frequent, (n − 1)/n when one class holds
    everything. NaN when the values sum to 0.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0 or (x < 0).any():
        raise CalexError("the Gini coefficient needs a non-empty array of non-negative values")
    if x.sum() == 0:
        return float("nan")
    # Sorted form of the double sum: Σ_i (2i − n − 1)·x_(i) over ascending x, i = 1..n.
    x = np.sort(x)
    n = x.size
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * x).sum() / (n * x.sum()))


def top_k_share(values, k: int = 3) -> float:
    """Share of the total held by the ``k`` largest values (NaN for a zero total)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if k < 1 or (x < 0).any():
        raise CalexError(f"top-k share needs k >= 1 and non-negative values, got k={k}")
    total = x.sum()
    return float(np.sort(x)[::-1][:k].sum() / total) if total > 0 else float("nan")
