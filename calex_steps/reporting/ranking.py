"""Which recipe does best at each target, and whether the data tell it from the runner-up.

Only measured cells compete: a recipe whose cell is extrapolated or missing
at a target is left out of that target's ranking. The gap to the runner-up is a
paired bootstrap difference; the best recipe is "distinguishable" when the
interval of the gap excludes zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from calex_steps.reporting.bootstrap import Estimate, interval
from calex_steps.reporting.curves import MEASURED

# Views ranked, and whether a lower value is better there.
LOWER_IS_BETTER = {"loss_fr": True, "iso_fr": False, "loss_lr": True}
COLUMNS = (
    "dataset", "backbone", "view", "target", "condition", "best", "mean", "ci_lo", "ci_hi",
    "runner_up", "gap", "gap_lo", "gap_hi", "verdict", "basis",
)  # fmt: skip


def rank(
    est: Estimate, recipes: Sequence[str], view: str, confidence: float, context: dict
) -> list[dict]:
    """One ranking row per target of ``est``.

    ``verdict`` is ``distinguishable`` / ``not distinguishable`` (the gap's
    interval excludes zero or not), ``single`` (one recipe measured there) or
    ``none`` (no recipe measured there). ``gap`` is always in the best recipe's
    favour (positive when it is better). ``context`` fills ``dataset``,
    ``backbone``, ``condition`` and ``basis``.
    """
    sign = 1.0 if LOWER_IS_BETTER[view] else -1.0
    lo, hi = interval(est.reps, confidence)
    rows = []
    for t, target in enumerate(est.targets):
        row = {**dict.fromkeys(COLUMNS, np.nan), **context, "view": view, "target": target}
        row.update(best="", runner_up="")
        measured = [r for r in range(len(recipes)) if est.status[r, t] == MEASURED]
        order = sorted(measured, key=lambda r: (sign * est.point[r, t], recipes[r]))
        if not order:
            rows.append({**row, "verdict": "none"})
            continue
        best = order[0]
        row.update(
            best=recipes[best], mean=est.point[best, t], ci_lo=lo[best, t], ci_hi=hi[best, t]
        )
        if len(order) == 1:
            rows.append({**row, "verdict": "single"})
            continue
        runner = order[1]
        gaps = sign * (est.reps[:, runner, t] - est.reps[:, best, t])
        gap_lo, gap_hi = interval(gaps[:, None], confidence)
        verdict = "distinguishable" if gap_lo[0] > 0 else "not distinguishable"
        gap = sign * (est.point[runner, t] - est.point[best, t])
        row.update(runner_up=recipes[runner], gap=gap, gap_lo=gap_lo[0], gap_hi=gap_hi[0],
                   verdict=verdict)  # fmt: skip
        rows.append(row)
    return rows


def not_measured(context: dict, view: str = "loss_lr") -> dict:
    """The ranking row of a view without data (latency never measured)."""
    return {**dict.fromkeys(COLUMNS, np.nan), **context, "view": view, "best": "",
            "runner_up": "", "verdict": "not measured"}  # fmt: skip


def ranking_frame(rows: list[dict]) -> pd.DataFrame:
    """The ranking rows in the column order of ``ranking.csv``."""
    return pd.DataFrame(rows, columns=list(COLUMNS))
