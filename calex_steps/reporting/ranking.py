"""Which recipe does best at each target, and how sure the data are of it.

Only measured cells compete: a recipe whose cell is extrapolated or missing at a
target is left out of that target's ranking. Picking the best of many recipes on the
same noisy numbers favours whichever got lucky, so the ranking does not test the
point-best against the runner-up: it counts, over the bootstrap replicates, how
often each recipe is the best one (``p_best``). A recipe is called best only when
that probability reaches ``best_probability`` (``report.best_probability``);
otherwise the contenders are the smallest set of recipes, most probable first,
whose probabilities add up to it: the recipes that cannot be told apart from the
best (docs/results.md, section Ranking and summary).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from calex_steps.reporting.bootstrap import Estimate, interval
from calex_steps.reporting.curves import MEASURED, STATUS_NAMES

# Views ranked, and whether a lower value is better there.
LOWER_IS_BETTER = {"loss_fr": True, "iso_fr": False, "loss_lr": True}
COLUMNS = (
    "dataset", "backbone", "view", "target", "condition", "recipe", "status", "mean",
    "ci_lo", "ci_hi", "p_best", "level", "contender", "verdict", "basis",
)  # fmt: skip
# verdict of a target: one recipe is best / several cannot be told apart / only one
# recipe measured there / none did / the view has no data
VERDICTS = ("best", "not told apart", "single", "none", "not measured")


def best_shares(reps: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """(R,) the share of replicates (rows of ``reps`` (B, R)) in which each recipe is
    the best; a tie splits the replicate equally among the tied recipes, and a recipe
    without a reading in a replicate (NaN) does not win it."""
    signed = np.where(np.isnan(reps), np.inf, reps if lower_is_better else -reps)
    top = signed == signed.min(axis=1, keepdims=True)
    return (top / top.sum(axis=1, keepdims=True)).mean(axis=0)


def contenders(p_best: np.ndarray, level: float) -> np.ndarray:
    """(R,) bool: the smallest set of recipes, most probable first (ties by position),
    whose probabilities of being best add up to ``level`` (NaN: not competing)."""
    p = np.where(np.isnan(p_best), -1.0, p_best)
    order = np.argsort(-p, kind="stable")
    before = np.cumsum(p[order]) - p[order]  # probability of the recipes ahead of each
    chosen = np.zeros(p.shape, bool)
    chosen[order] = (before < level - 1e-12) & (p[order] > 0)
    return chosen


def rank(
    est: Estimate,
    recipes: Sequence[str],
    view: str,
    confidence: float,
    level: float,
    context: dict,
) -> list[dict]:
    """Ranking rows of one view: per target, one row per recipe, contenders first.

    ``p_best`` is NaN for a recipe that does not compete (its cell is not measured);
    ``verdict`` (``VERDICTS``) repeats on every row of a target. ``context`` fills
    ``dataset``, ``backbone``, ``condition`` and ``basis``.
    """
    lower = LOWER_IS_BETTER[view]
    lo, hi = interval(est.reps, confidence)
    rows = []
    for t, target in enumerate(est.targets):
        measured = np.flatnonzero(est.status[:, t] == MEASURED)
        p_best = np.full(len(recipes), np.nan)
        if measured.size:
            p_best[measured] = best_shares(est.reps[:, measured, t], lower)
        chosen = contenders(p_best, level)
        verdict = ("none" if measured.size == 0 else "single" if measured.size == 1
                   else "best" if chosen.sum() == 1 else "not told apart")  # fmt: skip
        sign = 1.0 if lower else -1.0
        order = sorted(range(len(recipes)), key=lambda r: (
            not chosen[r], -np.nan_to_num(p_best[r], nan=-1.0),
            np.nan_to_num(sign * est.point[r, t], nan=np.inf), recipes[r]))  # fmt: skip
        for r in order:
            rows.append({
                **context, "view": view, "target": float(target), "recipe": recipes[r],
                "status": STATUS_NAMES[est.status[r, t]], "mean": est.point[r, t],
                "ci_lo": lo[r, t], "ci_hi": hi[r, t], "p_best": p_best[r], "level": level,
                "contender": bool(chosen[r]), "verdict": verdict,
            })  # fmt: skip
    return rows


def not_measured(context: dict, view: str = "loss_lr") -> dict:
    """The ranking row of a view without data (latency never measured)."""
    return {**dict.fromkeys(COLUMNS, np.nan), **context, "view": view, "recipe": "",
            "status": "not measured", "contender": False, "verdict": "not measured"}  # fmt: skip


def ranking_frame(rows: list[dict]) -> pd.DataFrame:
    """The ranking rows in the column order of ``ranking.csv``."""
    return pd.DataFrame(rows, columns=list(COLUMNS))
