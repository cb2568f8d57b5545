"""Scoring a baseline's setting on the calibration split alone (docs/baselines.md, search).

A hyper-parameter search must not look at test data, and a frontier measured
where its thresholds were set flatters it. So the calibration split is cut into
two stratified halves: CPM thresholds are set on the first (``fit``) at every
margin of the sweep's grid, the cascade runs on the second (``score``), and
the score is the mean accuracy loss against the backbone over an FR grid
(the area under the loss-vs-FR curve, divided by its width). numpy only.
"""

from __future__ import annotations

import numpy as np

from calex_steps.cascade.sweep import ExitCosts, ExitRule, margin_grid, sweep
from calex_steps.errors import CalexError

SEARCH_MARGINS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8)
"""The paper's margins; the dense grid below is joined to them."""

SEARCH_DENSE = {"low": 0.001, "high": 0.95, "count": 48}

FR_HIGH = 0.8
"""The score averages the loss over FR in [0, FR_HIGH] (the tables read FR 0.4 to 0.8)."""

FR_STEPS = 81


def calibration_halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint, sorted index arrays, each holding half of every class (seeded)."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng([seed, 7919])  # 7919: keeps these draws apart from the splits'
    fit, score = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        cut = len(members) // 2
        fit.append(members[:cut])
        score.append(members[cut:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(score))


def frontier_loss(fr, accuracy, backbone_accuracy: float, grid=None) -> np.ndarray:
    """The frontier's accuracy loss at every FR of ``grid`` (default [0, FR_HIGH]).

    The frontier at f is the best accuracy of an operating point whose FR is at
    least f (the backbone alone is the point FR 0); where no point reaches f the
    accuracy counts as 0, so a setting that stops short pays the whole backbone
    accuracy there.
    """
    grid = np.linspace(0.0, FR_HIGH, FR_STEPS) if grid is None else np.asarray(grid)
    fr = np.append(np.asarray(fr, dtype=np.float64), 0.0)
    acc = np.append(np.asarray(accuracy, dtype=np.float64), backbone_accuracy)
    reach = fr[None, :] >= grid[:, None] - 1e-12  # (G, P)
    best = np.where(reach, acc[None, :], 0.0).max(axis=1)
    return backbone_accuracy - best


def _part(split: dict, idx: np.ndarray) -> dict:
    return {
        "confs": [np.asarray(c)[idx] for c in split["confs"]],
        "preds": [np.asarray(p)[idx] for p in split["preds"]],
        "labels": np.asarray(split["labels"])[idx],
        "backbone_pred": np.asarray(split["backbone_pred"])[idx],
        "num_classes": split["num_classes"],
    }


def calibration_score(val: dict, costs: ExitCosts, seed: int) -> dict:
    """Score one trained setting on the calibration split ``val`` only.

    Args:
        val: ``confs``, ``preds`` (lists over L branches of (N,) arrays), ``labels``
            and ``backbone_pred`` (N,), ``num_classes``: the calibration split.
        costs: per-exit MACs (``cascade.simulate.cascade_cost``) and the backbone total.
        seed: draws the two halves.

    Returns:
        ``loss_area`` (mean loss over the FR grid, in accuracy units; lower is
        better), ``max_fr`` (largest FR reached on the scoring half) and
        ``loss_at_0.4`` (the frontier's loss at FR 0.4).
    """
    if val.get("labels") is None:
        raise CalexError(
            "the baseline search scores on the calibration labels, which the features "
            "file lacks; remove the recipe's 'search' key"
        )
    fit, score = calibration_halves(val["labels"], seed)
    grid = margin_grid(SEARCH_MARGINS, SEARCH_DENSE)
    table, _, _ = sweep(_part(val, fit), _part(val, score), grid, ExitRule(), costs)
    backbone = float(table["backbone_accuracy"].iloc[0])
    loss = frontier_loss(table["fr"], table["accuracy"], backbone)
    at_04 = frontier_loss(table["fr"], table["accuracy"], backbone, [0.4])[0]
    return {
        "loss_area": float(loss.mean()),
        "max_fr": float(table["fr"].max()),
        "loss_at_0.4": float(at_04),
    }
