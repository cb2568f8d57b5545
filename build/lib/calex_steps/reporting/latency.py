"""Latency tables: measured latency and speed-up read at common FRs, and crossover batch sizes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from calex_steps.cascade.latency import NOT_MEASURED
from calex_steps.reporting.curves import interpolate_curve

MISSING = "—"


FR_TARGETS = (0.4, 0.5, 0.6, 0.7, 0.8)


def interpolate_metric_at_fr(fr, values, targets, tolerance: float = 0.08) -> np.ndarray:
    """A measured quantity (latency, energy) of one curve read at target FRs.

    Points are sorted by FR; points sharing an FR are merged at their mean.
    Linear between points, continued along the end segments up to ``tolerance``
    beyond [min FR, max FR]; NaN further out (and everywhere for no points).
    Unlike ``tables.interpolate_at_fr`` there is no anchor at FR 0: the
    cascade's latency at FR 0 is not the backbone's.
    """
    fr, values = np.asarray(fr, np.float64).ravel(), np.asarray(values, np.float64).ravel()
    keep = np.isfinite(fr) & np.isfinite(values)
    return interpolate_curve(fr[keep], values[keep], targets, tolerance)


def _numeric(column: pd.Series) -> pd.Series:
    """A column as floats; "not measured" becomes NaN."""
    return pd.to_numeric(column, errors="coerce")


def latency_at_fr(table: pd.DataFrame, targets: Sequence[float] = FR_TARGETS) -> pd.DataFrame:
    """Per (recipe, batch size, target FR): latency, energy and measured speed-up, mean over seeds.

    Columns: recipe, batch_size, fr, latency_ms_per_sample, energy_mj_per_sample,
    measured_speedup; NaN where a curve does not reach the target, energy
    "not measured" when the table has no energy numbers.
    """
    rows = []
    energy_known = _numeric(table["energy_mj_per_sample"]).notna().any()
    for (recipe, batch), group in table.groupby(["recipe", "batch_size"], sort=True):
        lat, energy, base = [], [], []
        for _, run in group.groupby("seed"):
            lat.append(interpolate_metric_at_fr(run["fr"], run["latency_ms_per_sample"], targets))
            run_energy = _numeric(run["energy_mj_per_sample"])
            energy.append(interpolate_metric_at_fr(run["fr"], run_energy, targets))
            base.append(run["backbone_latency_ms_per_sample"].mean())
        lat_mean = np.mean(lat, axis=0)
        energy_mean = np.mean(energy, axis=0)
        for i, target in enumerate(targets):
            rows.append({"recipe": recipe, "batch_size": int(batch), "fr": float(target),
                         "latency_ms_per_sample": lat_mean[i],
                         "energy_mj_per_sample": energy_mean[i] if energy_known else NOT_MEASURED,
                         "measured_speedup": float(np.mean(base)) / lat_mean[i]})  # fmt: skip
    return pd.DataFrame(rows)


def crossover_batch_size(reference: dict[int, float], baseline: dict[int, float]) -> int | None:
    """Smallest measured batch size where the reference's latency is below the baseline's.

    Both map batch size -> per-sample latency at one matched FR; NaN entries are
    skipped; ``None`` ("—") when the reference is never faster.
    """
    for batch in sorted(set(reference) & set(baseline)):
        ref, base = reference[batch], baseline[batch]
        if np.isfinite(ref) and np.isfinite(base) and ref < base:
            return int(batch)
    return None


def crossover_table(at_fr: pd.DataFrame, reference: str = "calexnet") -> pd.DataFrame:
    """Per baseline recipe and target FR, the crossover batch size against ``reference``."""
    rows = []
    if reference not in set(at_fr["recipe"]):
        return pd.DataFrame(columns=["reference", "baseline", "fr", "crossover_batch_size"])
    for fr, group in at_fr.groupby("fr", sort=True):
        curves = {r: dict(zip(g["batch_size"], g["latency_ms_per_sample"], strict=True))
                  for r, g in group.groupby("recipe")}  # fmt: skip
        for baseline in sorted(set(curves) - {reference}):
            batch = crossover_batch_size(curves[reference], curves[baseline])
            rows.append({"reference": reference, "baseline": baseline, "fr": float(fr),
                         "crossover_batch_size": MISSING if batch is None else batch})  # fmt: skip
    return pd.DataFrame(rows, columns=["reference", "baseline", "fr", "crossover_batch_size"])
