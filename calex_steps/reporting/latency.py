"""Latency tables: the operating point a recipe is timed at, and crossover batch sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from calex_steps.errors import CalexError

MISSING = "—"


def operating_point(frontier: str | Path, fr: float) -> pd.Series:
    """The row of a run's ``frontier.csv`` whose FR is nearest ``fr`` (the smaller margin
    on a tie): the one operating point ``measure_latency`` times for the recipe."""
    if not Path(frontier).is_file():
        raise CalexError(f"{frontier} does not exist; run sweep_margins for this run first")
    table = pd.read_csv(frontier)
    if table.empty or not {"margin", "fr", "accuracy"} <= set(table.columns):
        raise CalexError(f"{frontier} has no margin/fr/accuracy rows; rerun sweep_margins")
    table = table.sort_values("margin", kind="stable").reset_index(drop=True)
    return table.iloc[int(np.argmin(np.abs(table["fr"].to_numpy() - fr)))]


def crossover_batch_size(reference: dict[int, float], baseline: dict[int, float]) -> int | None:
    """Smallest measured batch size where the reference's latency is below the baseline's.

    Both map batch size -> per-sample latency; NaN entries are skipped; ``None`` ("—")
    when the reference is never faster.
    """
    for batch in sorted(set(reference) & set(baseline)):
        ref, base = reference[batch], baseline[batch]
        if np.isfinite(ref) and np.isfinite(base) and ref < base:
            return int(batch)
    return None


def crossover_table(table: pd.DataFrame, reference: str = "calexnet") -> pd.DataFrame:
    """Per baseline recipe of the latency table, the smallest batch size at which the
    reference's per-sample latency (at its operating point) is below the baseline's
    (at its own), with both FRs; empty without the reference."""
    columns = ["reference", "baseline", "reference_fr", "baseline_fr", "crossover_batch_size"]
    if reference not in set(table["recipe"]):
        return pd.DataFrame(columns=columns)
    curves = {r: dict(zip(g["batch_size"], g["latency_ms_per_sample"], strict=True))
              for r, g in table.groupby("recipe")}  # fmt: skip
    frs = table.groupby("recipe")["fr"].first()
    rows = []
    for baseline in sorted(set(curves) - {reference}):
        batch = crossover_batch_size(curves[reference], curves[baseline])
        rows.append({"reference": reference, "baseline": baseline,
                     "reference_fr": frs[reference], "baseline_fr": frs[baseline],
                     "crossover_batch_size": MISSING if batch is None else batch})  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
