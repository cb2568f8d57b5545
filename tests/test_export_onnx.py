"""The ONNX cascade of a real tiny run: its file, its early exit, and its decisions against
the simulator for every exit signal."""

from __future__ import annotations

import json

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from test_export_cascade import sweep_with

from calex_steps.cascade.build import build_cascade
from calex_steps.deploy.build import exit_spec, model_parts, onnx_meta
from calex_steps.deploy.decisions import compare_decisions
from calex_steps.deploy.onnx_graph import ExitSpec, compose


@pytest.fixture(scope="module")
def branch_parts(tiny_cascade_run):
    """The exported parts of the tiny run's calexnet cascade (branch signal)."""
    return model_parts(build_cascade(tiny_cascade_run["run"], 0.05))


def run_graph(model: onnx.ModelProto, images: np.ndarray) -> tuple[np.ndarray, ...]:
    """(pred, exit, confidence) of a composed graph on two uneven batches."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    parts = [session.run(None, {"images": images[:70]}), session.run(None, {"images": images[70:]})]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def test_export_writes_a_checked_model_and_its_sidecar(tiny_cascade_run, onnx_export):
    model = onnx.load(str(onnx_export["model"]))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    (image,) = model.graph.input
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 3]  # dynamic batch
    assert [o.name for o in model.graph.output] == ["pred", "exit", "confidence"]
    sidecar = json.loads(onnx_export["sidecar"].read_text())
    with np.load(tiny_cascade_run["split"] / "thresholds.npz") as z:
        np.testing.assert_array_equal(np.array(sidecar["thresholds"]), z["m0.05"])
    assert sidecar["class_names"] == [f"coarse{i}" for i in range(4)]
    assert sidecar["recipe"] == "calexnet" and sidecar["margin"] == 0.05
    assert sidecar["num_branches"] == 3 and sidecar["precision"] == "float32"
    assert sidecar["check"]["images"] == 120 and sidecar["check"]["differing"] == 0
    embedded = json.loads({p.key: p.value for p in model.metadata_props}["calex"])
    assert embedded == {k: v for k, v in sidecar.items() if k != "check"}


def test_graph_decides_every_margin_as_the_simulator(tiny_cascade_run, branch_parts):
    exits = dict(np.load(tiny_cascade_run["split"] / "exits.npz"))
    images = tiny_cascade_run["images"].numpy()
    early = late = 0
    with np.load(tiny_cascade_run["split"] / "thresholds.npz") as z:
        thresholds = {m: z[f"m{m:g}"] for m in exits["margins"]}
    for margin in exits["margins"]:
        spec = ExitSpec("branch", thresholds[margin])
        pred, exit_branch, conf = run_graph(compose(branch_parts, spec, {}), images)
        report = compare_decisions(pred, exit_branch, exits, margin, thresholds[margin], 0.0)
        assert report["differing"] == 0, report
        assert np.all((conf > 0) & (conf <= 1))
        early += int((exit_branch < 3).sum())
        late += int((exit_branch == 3).sum())
    assert early > 0 and late > 0  # both the branch exits and the tail were compared


def test_nothing_released_runs_the_backbone_and_all_released_stops_at_once(
    tiny_cascade_run, branch_parts
):
    images = tiny_cascade_run["images"].numpy()
    never = run_graph(compose(branch_parts, ExitSpec("branch", np.ones((3, 4))), {}), images)
    with h5py.File(tiny_cascade_run["root"] / "features.h5", "r") as f:
        logits = f["test"]["logits"][...]
    np.testing.assert_array_equal(never[1], 3)
    np.testing.assert_array_equal(never[0], logits.argmax(axis=1))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(never[2], (probs / probs.sum(axis=1, keepdims=True)).max(axis=1),
                               rtol=1e-5)  # fmt: skip
    always = run_graph(compose(branch_parts, ExitSpec("branch", -np.ones((3, 4))), {}), images)
    np.testing.assert_array_equal(always[1], 0)


def test_one_if_per_branch_nested(branch_parts):
    def ifs(graph) -> int:
        nested = [a.g for n in graph.node if n.op_type == "If" for a in n.attribute]
        return sum(n.op_type == "If" for n in graph.node) + sum(ifs(g) for g in nested)

    assert ifs(compose(branch_parts, ExitSpec("branch", np.ones((3, 4))), {}).graph) == 3


@pytest.mark.parametrize(
    ("signal", "extra"),
    [
        ("max_softmax", {"temperature_scaling": True}),
        ("entropy", None),
        ("top2_gap", None),
        ("patience", {"thresholds": "global"}),
        ("ztw_ensemble", None),
    ],  # fmt: skip
)
def test_every_exit_signal_agrees_with_the_simulator(tiny_cascade_run, tmp_path, signal, extra,
                                                     logit_parts):  # fmt: skip
    run = tiny_cascade_run["run"]
    stem, ensembles = "branch", None
    if signal == "ztw_ensemble":
        from calex_steps.stages.ztw_ensemble import run_ztw_ensemble

        stem = "ztw_ensemble"
        ensembles = [tmp_path / f"ztw_ensemble{b}.npz" for b in (1, 2, 3)]
        run_ztw_ensemble(tiny_cascade_run["root"] / "features.h5",
                         [run / f"branch{b}.npz" for b in (1, 2, 3)], 0, ensembles, steps=30,
                         recipe="calexnet")  # fmt: skip
        for b, path in enumerate(ensembles, 1):
            (run / f"ztw_ensemble{b}.npz").write_bytes(path.read_bytes())
    thresholds, exits = sweep_with(tiny_cascade_run, tmp_path, signal, extra, stem)
    exits = dict(exits)
    images = tiny_cascade_run["images"].numpy()
    early = 0
    for margin in exits["margins"]:
        model = build_cascade(run, float(margin), thresholds=thresholds, exit_signal=signal,
                              ensembles=ensembles)  # fmt: skip
        spec = exit_spec(model)
        pred, exit_branch, _ = run_graph(compose(logit_parts, spec, onnx_meta(model, spec)),
                                         images)  # fmt: skip
        report = compare_decisions(pred, exit_branch, exits, margin, spec.thresholds, 0.0)
        assert report["differing"] == 0, (margin, report)
        early += int((exit_branch < 3).sum())
    assert early > 0
    for b in (1, 2, 3):
        (run / f"ztw_ensemble{b}.npz").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def logit_parts(tiny_cascade_run):
    """Parts without the confidence layer: what every signal but the branch's reads."""
    return model_parts(build_cascade(tiny_cascade_run["run"], 0.05, exit_signal="entropy"))
