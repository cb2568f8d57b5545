"""The ONNX cascade with every head kind at any exits: its decisions against the simulator,
and its INT8 variant (docs/deploy.md)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from helpers import HEAD_EXITS, train_head_kind

from calex_steps.cascade.build import build_cascade
from calex_steps.deploy.build import exit_spec, input_size, model_parts, onnx_meta
from calex_steps.deploy.decisions import compare_decisions
from calex_steps.deploy.onnx_export import cut_parts, export_parts
from calex_steps.deploy.onnx_graph import compose
from calex_steps.deploy.quantize import calibration_sample, quantize_graph


def run_graph(model, images: np.ndarray, splits=(70,)) -> tuple[np.ndarray, ...]:
    """(pred, exit, confidence) of a graph on ``images`` cut into batches at ``splits``."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    chunks = np.split(images, list(splits))
    found = [session.run(None, {"images": chunk}) for chunk in chunks]
    return tuple(np.concatenate([f[i] for f in found]) for i in range(3))


def kind_cascade(cache, run, margin, thresholds):
    return build_cascade(run, float(margin), backbone=cache / "backbone.pt",
                         probe=cache / "probe.pt", features=cache / "features.h5",
                         thresholds=thresholds)  # fmt: skip


@pytest.mark.parametrize("kind", list(HEAD_EXITS))
def test_every_head_kind_at_any_exit_decides_as_the_simulator(
    tiny_cascade_run, every_form_cache, kind, tmp_path
):
    """Each kind's parts are exported once; the graph composed with each margin's
    thresholds releases every test image where exits.npz does, with its prediction, in
    two uneven batches and one by one."""
    run, thresholds, exits = train_head_kind(every_form_cache, kind, tmp_path)
    count = len(HEAD_EXITS[kind])
    images = tiny_cascade_run["images"].numpy()
    parts = model_parts(kind_cascade(every_form_cache, run, exits["margins"][0], thresholds))
    assert len(parts.stages) == count
    assert parts.reads_prev == [False] + [kind == "ztw_cascading"] * (count - 1)
    early = 0
    for i, margin in enumerate(exits["margins"]):
        model = kind_cascade(every_form_cache, run, margin, thresholds)
        spec = exit_spec(model)
        graph = compose(parts, spec, onnx_meta(model, spec))
        pred, exit_branch, conf = run_graph(graph, images)
        report = compare_decisions(pred, exit_branch, exits, float(margin), spec.thresholds, 0.0)
        assert report["differing"] == 0, (margin, report)
        assert np.all((conf > 0) & (conf <= 1))
        ones = run_graph(graph, images[::37], splits=range(1, len(images[::37])))
        np.testing.assert_array_equal(ones[1], exits["exit_branch"][i][::37])
        early += int((exit_branch < count).sum())
    assert early > 0


@pytest.mark.parametrize("kind", list(HEAD_EXITS))
def test_every_head_form_quantizes(tiny_cascade_run, every_form_cache, kind, tmp_path):
    """Every kind (prototype heads on the Gram or the map, pooled, convolutional, fed the
    previous logits) quantizes to an INT8 graph that runs and, at the float thresholds,
    keeps at least 9 in 10 of the float graph's predictions and exits."""
    run, thresholds, exits = train_head_kind(every_form_cache, kind, tmp_path)
    model = kind_cascade(every_form_cache, run, exits["margins"][0], thresholds)
    full = export_parts(model, input_size(model))
    images = tiny_cascade_run["images"].numpy()
    quantized = quantize_graph(full, calibration_sample(images, 64))
    ops = {n.op_type for n in quantized.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    count = len(HEAD_EXITS[kind])
    spec = exit_spec(model)
    float_answers = run_graph(compose(cut_parts(full, count), spec, {}), images)
    int8_answers = run_graph(compose(cut_parts(quantized, count), spec, {}), images)
    assert np.all((int8_answers[1] >= 0) & (int8_answers[1] <= count))
    # at the float thresholds, INT8 rounding moves a few answers (2-4 % on this run), not more
    assert np.mean(int8_answers[0] == float_answers[0]) >= 0.9
    assert np.mean(int8_answers[1] == float_answers[1]) >= 0.9
