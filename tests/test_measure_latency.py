"""Latency measurement: one operating point per recipe on a real tiny run, and the crossover."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from calex_steps.cascade.latency import NOT_MEASURED, call_counts, timed_image_count
from calex_steps.errors import CalexError
from calex_steps.models.inference import load_split
from calex_steps.reporting.latency import (
    MISSING,
    crossover_batch_size,
    crossover_table,
    operating_point,
)
from calex_steps.stages.measure_latency import (
    TABLE_COLUMNS,
    predicted_speedup,
    run_measure_latency,
)
from calex_steps.stages.measure_segments import run_measure_segments


def test_one_operating_point_per_recipe(tiny_cascade_run, tmp_path):
    run, root = tiny_cascade_run["run"], tiny_cascade_run["root"]
    segments = tmp_path / "segments.json"
    settings = {"batch_sizes": [1, 16], "warmup": 1, "timed": 8, "prototypes": 16}
    run_measure_segments(tiny_cascade_run["prepared"], root / "backbone.pt", root / "probe.pt",
                         root / "features.h5", settings, "cpu", segments)  # fmt: skip
    plan = [{"recipe": "calexnet", "run": str(run), "branch_run": str(run),
             "exit_signal": "branch", "head": "augmented"}]  # fmt: skip
    outs = [tmp_path / "lat.csv", tmp_path / "cross.csv"]
    run_measure_latency(plan, tiny_cascade_run["prepared"], 0.5, [16, 1], 1, 8, "cpu", *outs,
                        segments=segments)  # fmt: skip
    written = pd.read_csv(outs[0], keep_default_na=False)
    assert list(written.columns) == TABLE_COLUMNS
    assert len(written) == 2 and list(written["batch_size"]) == [1, 16]
    assert set(written["energy_mj_per_sample"]) == {NOT_MEASURED}
    frontier = pd.read_csv(tiny_cascade_run["split"] / "frontier.csv")
    nearest = frontier.iloc[(frontier["fr"] - 0.5).abs().argmin()]
    np.testing.assert_allclose(written["margin"], nearest["margin"], rtol=1e-5)  # one margin
    np.testing.assert_allclose(written["flops_speedup"], 1 / (1 - nearest["fr"]), rtol=1e-5)
    ratio = written["backbone_latency_ms_per_sample"] / written["latency_ms_per_sample"]
    np.testing.assert_allclose(written["measured_speedup"], ratio, rtol=1e-4)
    assert (written["predicted_speedup"].astype(float) > 0).all()
    assert json.loads(segments.read_text())["attach_points"] == ["layer1", "layer2", "layer3"]
    with pytest.raises(CalexError, match="--plan needs one entry per recipe"):
        run_measure_latency([{"recipe": "x"}], tiny_cascade_run["prepared"], 0.5, [1], 1, 8,
                            "cpu", *outs)  # fmt: skip


def test_operating_point_is_the_nearest_fr(tmp_path):
    path = tmp_path / "frontier.csv"
    pd.DataFrame({"margin": [0.3, 0.1, 0.2], "fr": [0.7, 0.45, 0.55],
                  "accuracy": [0.8, 0.9, 0.85]}).to_csv(path, index=False)  # fmt: skip
    assert operating_point(path, 0.5)["margin"] == 0.1  # tie: the smaller margin
    assert operating_point(path, 0.9)["margin"] == 0.3
    with pytest.raises(CalexError, match="run sweep_margins"):
        operating_point(tmp_path / "missing.csv", 0.5)


def test_call_counts():
    assert call_counts(1, 50, 500) == (50, 500)
    assert call_counts(512, 50, 500) == (2, 3)
    assert call_counts(128, 50, 500) == (2, 4)


def test_timing_reads_only_the_images_it_times(tiny_cascade_run):
    # the real-data settings: 5 + 50 inferences at batch 1, 3 calls of 256 at batch 256
    assert timed_image_count([1, 32, 256], 5, 50) == 768
    assert timed_image_count([1], 50, 500) == 500
    prepared = tiny_cascade_run["prepared"]
    whole, labels = load_split(prepared, "test", "labels")
    first, first_labels = load_split(prepared, "test", "labels", rows=7)
    assert first.shape == (7, *whole.shape[1:]) and first.dtype == torch.uint8
    assert torch.equal(first, whole[:7]) and torch.equal(first_labels, labels[:7])


def test_crossover_from_a_hand_made_table():
    assert crossover_batch_size({1: 2.0, 8: 1.0, 32: 0.5}, {1: 1.5, 8: 1.2, 32: 0.6}) == 8
    assert crossover_batch_size({1: 2.0, 8: 2.0}, {1: 1.0, 8: 1.0}) is None
    assert crossover_batch_size({1: np.nan, 8: 0.1}, {1: 1.0, 8: 1.0}) == 8
    rows = []
    for recipe, lat in (("calexnet", {1: 2.0, 8: 1.0}), ("noalign", {1: 1.5, 8: 1.2}),
                        ("kd_only", {1: 1.0, 8: 0.5})):  # fmt: skip
        for batch, ms in lat.items():
            rows.append({"recipe": recipe, "fr": 0.5, "batch_size": batch,
                         "latency_ms_per_sample": ms})  # fmt: skip
    cross = crossover_table(pd.DataFrame(rows)).set_index("baseline")["crossover_batch_size"]
    assert cross["noalign"] == 8 and cross["kd_only"] == MISSING
    assert crossover_table(pd.DataFrame(rows), "absent").empty


def test_predicted_speedup_from_a_hand_made_segments_file():
    # Two attach points: segments of 1.0 and 2.0 ms, a tail of 1.0 ms, augmented heads of
    # 0.1 and 0.2 ms; the plain backbone takes 4.0 ms. An image leaving at the first branch
    # pays 1.0 + 0.1, at the second 3.0 + 0.3, going through 4.0 + 0.3 ms.
    segments = {"attach_points": ["layer1", "layer2"], "per_batch": {"256": {
        "segments_ms": [1.0, 2.0], "tail_ms": 1.0, "backbone_ms": 4.0,
        "heads_ms": {"augmented": [0.1, 0.2], "basic": [0.05, 0.05]}}}}  # fmt: skip
    fracs = np.array([0.5, 0.25, 0.25])
    cascade = 0.5 * 1.1 + 0.25 * 3.3 + 0.25 * 4.3  # 2.45 ms per image
    got = predicted_speedup(segments, fracs, ["layer1", "layer2"], 256, "augmented")
    assert got == pytest.approx(4.0 / cascade)  # backbone time over cascade time: 1.63
    basic = 0.5 * 1.05 + 0.25 * 3.1 + 0.25 * 4.1
    assert predicted_speedup(segments, fracs, ["layer1", "layer2"], 256, "basic") == (
        pytest.approx(4.0 / basic)
    )
    assert np.isnan(predicted_speedup(segments, fracs, ["layer1", "layer2"], 32, "augmented"))
    assert np.isnan(predicted_speedup(None, fracs, ["layer1", "layer2"], 256, "augmented"))
