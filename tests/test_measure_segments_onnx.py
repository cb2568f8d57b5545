"""measure_segments_onnx on a real tiny run: segments_onnx.json as the sweep reads it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import copy_workflow, snakemake, write_tiny
from test_workflow import scheduled

from calex_steps.cascade.latency import HEAD_KINDS
from calex_steps.cascade.simulate import segment_times
from calex_steps.stages.measure_segments_onnx import run_measure_segments_onnx

SETTINGS = {"batch_sizes": [16, 1], "warmup": 2, "timed": 16, "prototypes": 8}


def test_segments_timed_in_onnx_runtime_are_what_the_sweep_reads(tiny_cascade_run, tmp_path):
    root = tiny_cascade_run["root"]
    out = tmp_path / "latency" / "segments_onnx.json"
    run_measure_segments_onnx(tiny_cascade_run["prepared"], root / "backbone.pt",
                              root / "probe.pt", root / "features.h5", SETTINGS, out,
                              threads=1)  # fmt: skip
    data = json.loads(out.read_text())
    assert data["runtime"] == "onnxruntime" and data["onnxruntime"] and data["threads"] == 1
    attach = ["layer1", "layer2", "layer3"]
    assert data["attach_points"] == attach and sorted(data["per_batch"]) == ["1", "16"]
    for batch in (1, 16):
        entry = data["per_batch"][str(batch)]
        assert sorted(entry["heads_ms"]) == sorted(HEAD_KINDS)
        assert all(t > 0 for t in [*entry["segments_ms"], entry["tail_ms"], entry["backbone_ms"]])
        for kind in HEAD_KINDS:
            times, backbone = segment_times(data, attach, batch, kind)
            assert backbone == entry["backbone_ms"] and np.all(np.diff(times) > 0)


def test_every_head_kind_of_the_study_is_timed_in_onnx_runtime(tiny_cascade_run, tmp_path):
    root = tiny_cascade_run["root"]
    kinds = ["sdn", "msdnet", "ztw_cascading+cascade"]
    out = tmp_path / "segments_onnx.json"
    settings = SETTINGS | {"batch_sizes": [4], "heads": kinds}
    run_measure_segments_onnx(tiny_cascade_run["prepared"], root / "backbone.pt",
                              root / "probe.pt", root / "features.h5", settings, out,
                              threads=1)  # fmt: skip
    heads = json.loads(out.read_text())["per_batch"]["4"]["heads_ms"]
    assert sorted(heads) == sorted(kinds)
    assert all(len(times) == 3 and min(times) > 0 for times in heads.values())


@pytest.mark.slow
def test_lr_runtime_onnx_makes_the_sweeps_read_onnx_runtime_times(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    write_tiny(workdir, {"latency.lr_runtime": "onnx", "study.recipes": ["calexnet"]})
    result = snakemake(workdir, "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = scheduled(result.stdout)
    assert jobs["measure_segments_onnx"] == 1 and jobs["measure_segments"] == 1  # + PyTorch table
    sweeps = [b for b in result.stdout.split("\n\n") if "rule sweep_margins:" in b]
    assert sweeps and all("latency/segments_onnx.json" in b for b in sweeps)


def test_timing_sessions_do_not_spin():
    """Parts are timed in many sessions of one process: idle workers must not spin on
    the cores another part runs on (docs/deploy.md, Measured on real data)."""
    import onnx
    from onnx import TensorProto, helper

    from calex_steps.deploy.timing import ort_session

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model)
    session = ort_session(model, threads=2)
    options = session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2
    out = session.run(None, {"x": np.array([[-1.0, 2.0]], np.float32)})[0]
    assert out.tolist() == [[0.0, 2.0]]
