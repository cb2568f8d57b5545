"""measure_segments_onnx on a real tiny run: segments_onnx.json as the sweep reads it."""

from __future__ import annotations

import json

import numpy as np

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
