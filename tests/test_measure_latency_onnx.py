"""measure_latency_onnx on a real tiny run: float and INT8 ONNX cascades at one operating
point, against the ONNX backbones."""

from __future__ import annotations

import importlib
import json
import re
import shlex

import numpy as np
import pandas as pd
import pytest
from conftest import copy_workflow, snakemake, write_tiny

from calex_steps.errors import CalexError
from calex_steps.stages.measure_latency import TABLE_COLUMNS
from calex_steps.stages.measure_latency_onnx import run_measure_latency_onnx

SETTINGS = {"exit_signal": "branch", "thresholds": "per_class", "calibration": "cascade",
            "calibration_target": "cpm", "temperature_scaling": False,
            "calibration_images": 64}  # fmt: skip


def test_float_and_int8_at_the_operating_point(tiny_cascade_run, tmp_path):
    run = str(tiny_cascade_run["run"])
    segments = tmp_path / "segments_onnx.json"  # hand-made times: the prediction by hand
    segments.write_text(json.dumps({
        "attach_points": ["layer1", "layer2", "layer3"],
        "per_batch": {"8": {"segments_ms": [1.0, 2.0, 3.0], "tail_ms": 4.0, "backbone_ms": 10.0,
                            "heads_ms": {"augmented": [0.1, 0.1, 0.1]}}},
    }))  # fmt: skip
    plan = [{"recipe": "calexnet", "run": run, "branch_run": run, "exit_signal": "branch",
             "head": "augmented", "settings": SETTINGS}]  # fmt: skip
    outs = [tmp_path / "latency_onnx.csv", tmp_path / "int8.csv"]
    run_measure_latency_onnx(plan, tiny_cascade_run["prepared"], 0.5, [8], 1, 16, *outs,
                             segments=segments, threads=1)  # fmt: skip
    table = pd.read_csv(outs[0], keep_default_na=False)
    assert list(table.columns) == TABLE_COLUMNS and len(table) == 1
    row = table.iloc[0]
    frontier = pd.read_csv(tiny_cascade_run["split"] / "frontier.csv")
    point = frontier.iloc[(frontier["fr"] - 0.5).abs().argmin()]
    assert row["margin"] == pytest.approx(point["margin"]) and row["fr"] == pytest.approx(
        point["fr"]
    )
    exits = np.load(tiny_cascade_run["split"] / "exits.npz")
    at = list(exits["margins"]).index(point["margin"])
    timed = exits["exit_branch"][at][:24]  # 3 timed calls of 8 images
    fracs = np.bincount(timed, minlength=4) / 24
    expected = 10.0 / float(np.dot(fracs, [1.1, 3.2, 6.3, 10.3]))
    assert float(row["predicted_speedup"]) == pytest.approx(expected)
    assert row["accuracy"] == pytest.approx(np.mean(exits["final_pred"][at] == exits["labels"]))
    assert row["measured_speedup"] == pytest.approx(
        row["backbone_latency_ms_per_sample"] / row["latency_ms_per_sample"], rel=1e-4
    )
    int8 = pd.read_csv(outs[1]).iloc[0]
    assert int8["fr"] == pytest.approx(point["fr"]) and 0 <= int8["int8_fr"] <= 1
    # frontier.csv holds six decimals (CSV_FLOAT), the INT8 table six significant digits
    assert int8["exit_frac_backbone"] == pytest.approx(point["exit_frac_backbone"], abs=1e-6)
    fracs8 = [int8[f"int8_exit_frac_{k}"] for k in ("1", "2", "3", "backbone")]
    assert sum(fracs8) == pytest.approx(1.0)
    product = int8["cascade_speedup"] * int8["int8_backbone_speedup"]
    assert int8["multiplies"] == pytest.approx(int8["int8_cascade_speedup"] / product, rel=1e-4)
    assert int8["int8_cascade_speedup"] == pytest.approx(
        int8["backbone_ms_per_sample"] / int8["int8_cascade_ms_per_sample"], rel=1e-4
    )
    with pytest.raises(CalexError, match="--plan needs one entry per recipe"):
        run_measure_latency_onnx([{"recipe": "x"}], tiny_cascade_run["prepared"], 0.5, [1], 1,
                                 8, *outs)  # fmt: skip


@pytest.mark.slow
def test_every_onnx_rule_calls_its_stage_with_arguments_it_takes(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    write_tiny(workdir, {"study.recipes": ["calexnet", "ztw"]})
    result = snakemake(workdir, "onnx_all", "-n", "-p")
    assert result.returncode == 0, result.stderr[-3000:]
    seen = set()
    for line in result.stdout.splitlines():
        match = re.search(r"python -m calex_steps\.stages\.(\w+_onnx|export_onnx) (.*?) >", line)
        if match:
            stage = importlib.import_module(f"calex_steps.stages.{match.group(1)}")
            stage.build_parser().parse_args(shlex.split(match.group(2)))  # exits on a bad flag
            seen.add(match.group(1))
    assert seen == {"export_onnx", "check_onnx", "quantize_onnx", "measure_segments_onnx",
                    "measure_latency_onnx"}  # fmt: skip


def test_a_recipe_with_fewer_exits_than_the_cache_has_points(
    tiny_cascade_run, every_form_cache, tmp_path
):
    """A two-exit recipe on a cache of seven attach points (the plan's ``exits``): its
    float and INT8 graphs run its own two heads at its own blocks."""
    from helpers import HEAD_EXITS, train_head_kind

    from calex_steps.deploy.measure import onnx_point
    from calex_steps.stages.sweep_margins import run_sweep_margins

    run, _, _ = train_head_kind(every_form_cache, "augmented", tmp_path)
    split = run / "split0"
    outs = [split / n for n in ("sweep.csv", "thresholds.npz", "exits.npz", "per_class.csv")]
    run_sweep_margins(every_form_cache / "features.h5", [run / "branch1.npz", run / "branch2.npz"],
                      {"margins": [0.05, 0.2, 0.4], "calibration": "full"}, *outs,
                      out_frontier=split / "frontier.csv")  # fmt: skip
    entry = {"recipe": "augmented", "run": str(run), "branch_run": str(run), "exits": 2,
             "exit_signal": "branch", "head": "augmented",
             "settings": SETTINGS | {"calibration": "full"}}  # fmt: skip
    images, labels = (tiny_cascade_run["images"].numpy(),
                      np.load(split / "exits.npz")["labels"])  # fmt: skip
    point = onnx_point(entry, 0.5, (images, labels), (images[:64], labels[:64]), threads=1)
    assert point.attach == HEAD_EXITS["augmented"]
    for name in ("cascade", "int8_cascade"):
        fractions = point.scores[name]["exit_fractions"]
        assert len(fractions) == 3 and abs(sum(fractions) - 1) < 1e-9
