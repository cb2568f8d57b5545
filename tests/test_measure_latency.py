"""Latency measurement: the table on a real tiny run, interpolation and crossover logic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from calex_steps.cascade.latency import NOT_MEASURED, call_counts
from calex_steps.reporting.latency import (
    MISSING,
    crossover_batch_size,
    crossover_table,
    interpolate_metric_at_fr,
    latency_at_fr,
)
from calex_steps.stages.measure_latency import TABLE_COLUMNS, run_measure_latency


def test_table_on_cpu_says_energy_not_measured(tiny_cascade_run, tmp_path):  # noqa: F811
    outs = [tmp_path / n for n in ("lat.csv", "at_fr.csv", "cross.csv")]
    table = run_measure_latency([tiny_cascade_run["run"]], tiny_cascade_run["prepared"],
                                [0.05, 0.2], [1, 16], 1, 4, "cpu", *outs)  # fmt: skip
    written = pd.read_csv(outs[0], keep_default_na=False)
    assert list(written.columns) == TABLE_COLUMNS
    assert len(written) == 4 and set(written["batch_size"]) == {1, 16}
    assert set(written["energy_mj_per_sample"]) == {NOT_MEASURED}
    assert (table["latency_ms_per_sample"] > 0).all()
    sweep = pd.read_csv(tiny_cascade_run["split"] / "sweep.csv").set_index("margin")
    fr = sweep.loc[written["margin"], "fr"].to_numpy()
    np.testing.assert_allclose(written["flops_speedup"], 1 / (1 - fr), rtol=1e-5)
    ratio = written["backbone_latency_ms_per_sample"] / written["latency_ms_per_sample"]
    np.testing.assert_allclose(written["measured_speedup"], ratio, rtol=1e-4)
    at_fr = pd.read_csv(outs[1], keep_default_na=False)
    assert set(at_fr["energy_mj_per_sample"]) == {NOT_MEASURED}
    assert list(pd.read_csv(outs[2]).columns) == [
        "reference",
        "baseline",
        "fr",
        "crossover_batch_size",
    ]


def test_call_counts():
    assert call_counts(1, 50, 500) == (50, 500)
    assert call_counts(512, 50, 500) == (1, 3)
    assert call_counts(128, 50, 500) == (1, 4)


def test_interpolation_merges_ties_and_limits_extrapolation():
    fr = [0.5, 0.3, 0.5, 0.7]
    lat = [2.0, 3.0, 4.0, 1.0]  # FR 0.5 twice -> mean 3.0
    out = interpolate_metric_at_fr(fr, lat, [0.3, 0.4, 0.5, 0.6, 0.75, 0.8])
    np.testing.assert_allclose(out[:5], [3.0, 3.0, 3.0, 2.0, 0.5])
    assert np.isnan(out[5])  # 0.1 past the largest FR
    assert np.isnan(interpolate_metric_at_fr([0.5], [np.nan], [0.5])[0])


def test_crossover_from_a_hand_made_table():
    assert crossover_batch_size({1: 2.0, 8: 1.0, 32: 0.5}, {1: 1.5, 8: 1.2, 32: 0.6}) == 8
    assert crossover_batch_size({1: 2.0, 8: 2.0}, {1: 1.0, 8: 1.0}) is None
    assert crossover_batch_size({1: np.nan, 8: 0.1}, {1: 1.0, 8: 1.0}) == 8
    rows = []
    for recipe, lat in (("calexnet", {1: 2.0, 8: 1.0}), ("noalign", {1: 1.5, 8: 1.2}),
                        ("kd_only", {1: 1.0, 8: 0.5})):  # fmt: skip
        for batch, ms in lat.items():
            for margin, fr, scale in ((0.05, 0.4, 1.0), (0.2, 0.6, 1.0)):
                rows.append({"recipe": recipe, "seed": 0, "margin": margin, "fr": fr,
                             "batch_size": batch, "latency_ms_per_sample": ms * scale,
                             "backbone_latency_ms_per_sample": 3.0,
                             "energy_mj_per_sample": NOT_MEASURED})  # fmt: skip
    at_fr = latency_at_fr(pd.DataFrame(rows), targets=(0.5,))
    cross = crossover_table(at_fr).set_index("baseline")["crossover_batch_size"]
    assert cross["noalign"] == 8 and cross["kd_only"] == MISSING
    speedup = at_fr.set_index(["recipe", "batch_size"])["measured_speedup"]
    assert speedup[("calexnet", 8)] == pytest.approx(3.0)
