"""INT8 cascades: quantized parts, thresholds recalibrated on the quantized outputs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from scipy.special import expit

from calex_steps.cascade.module import exit_signal
from calex_steps.deploy.onnx_graph import ExitSpec
from calex_steps.deploy.onnx_runner import OnnxCascade
from calex_steps.deploy.quantize import branch_outputs, calibration_sample, recalibrate
from calex_steps.errors import CalexError
from calex_steps.stages.quantize_onnx import run_quantize_onnx

RULE = {"exit_signal": "branch", "thresholds": "per_class", "calibration": "cascade",
        "calibration_target": "cpm", "temperature_scaling": False}  # fmt: skip


def outputs(rng, n=50, count=2, classes=3) -> dict:
    found = {f"cls{b}": rng.normal(size=(n, classes)).astype(np.float32) for b in range(count)}
    found |= {f"conf{b}": rng.normal(size=(n, classes)).astype(np.float32) for b in range(count)}
    return found | {"logits": rng.normal(size=(n, classes)).astype(np.float32)}


def test_global_thresholds_are_recalibrated_to_their_closed_form():
    rng = np.random.default_rng(0)
    spec = ExitSpec("branch", np.zeros((2, 3)))
    found = recalibrate(outputs(rng), None, spec, {"thresholds": "global"}, 0.25)
    np.testing.assert_allclose(found.thresholds, np.full((2, 3), 0.75))
    patience = ExitSpec("patience", np.zeros((2, 3)))
    found = recalibrate(outputs(rng), None, patience,
                        {"exit_signal": "patience", "thresholds": "global"}, 0.25)  # fmt: skip
    np.testing.assert_allclose(found.thresholds, np.full((2, 3), 1.5))  # (1 - m) * L
    with pytest.raises(CalexError, match="exit signal entropy is not the cascade's branch"):
        recalibrate(outputs(rng), None, spec, {"exit_signal": "entropy"}, 0.25)


def test_branch_and_ztw_signals_match_the_module():
    rng = np.random.default_rng(1)
    found = outputs(rng)
    confs, preds, _ = branch_outputs(found, ExitSpec("branch", np.zeros((2, 3))), 2)
    expected = expit(found["conf1"])[np.arange(50), found["cls1"].argmax(axis=1)]
    np.testing.assert_allclose(confs[1], expected, rtol=1e-6)
    ens_a = np.array([[0.3, 0.0], [0.1, -0.2]], np.float32)
    ens_b = rng.normal(size=(2, 3)).astype(np.float32)
    spec = ExitSpec("ztw_ensemble", np.zeros((2, 3)), ens_a=ens_a, ens_b=ens_b)
    confs, preds, _ = branch_outputs(found, spec, 2)
    members = torch.zeros(0)
    for b in range(2):
        pred, signal, members = exit_signal(
            1, torch.from_numpy(found[f"cls{b}"]), torch.zeros(0), 1.0,
            torch.from_numpy(ens_a[b, : b + 1]), torch.from_numpy(ens_b[b]), members,
            torch.zeros(0), torch.zeros(0),
        )  # fmt: skip
        np.testing.assert_array_equal(preds[b], pred.numpy())
        np.testing.assert_allclose(confs[b], signal.numpy(), rtol=1e-5)


def test_int8_cascade_of_the_tiny_run(tiny_cascade_run, tmp_path):
    out, sidecar = tmp_path / "int8.onnx", tmp_path / "int8.json"
    meta = run_quantize_onnx(tiny_cascade_run["run"], 0.05, tiny_cascade_run["prepared"],
                             RULE | {"calibration_images": 64}, out, sidecar,
                             threads=1)  # fmt: skip
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    ops = set()
    for graph in [model.graph] + [a.g for n in model.graph.node for a in n.attribute]:
        ops |= {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "If"} <= ops
    assert meta["precision"] == "int8" and meta["calibration_images"] == 64
    assert json.loads(sidecar.read_text()) == meta
    with np.load(tiny_cascade_run["split"] / "thresholds.npz") as z:
        float_thresholds = z["m0.05"]
    int8_thresholds = np.array(meta["thresholds"])
    assert int8_thresholds.shape == float_thresholds.shape == (3, 4)
    assert not np.array_equal(int8_thresholds, float_thresholds)  # recalibrated, not copied
    pred, exit_branch, _ = OnnxCascade(out)(tiny_cascade_run["images"].numpy())
    labels = np.load(tiny_cascade_run["split"] / "exits.npz")["labels"]
    assert meta["test"]["accuracy"] == float(np.mean(pred == labels))
    assert meta["test"]["exit_fractions"] == (np.bincount(exit_branch, minlength=4) / 120).tolist()
    with pytest.raises(CalexError, match="calibration_images >= 1"):
        run_quantize_onnx(tiny_cascade_run["run"], 0.05, tiny_cascade_run["prepared"], RULE,
                          out, sidecar)  # fmt: skip


def test_calibration_sample_covers_a_split_grouped_by_class():
    labels = np.repeat(np.arange(10), 100)  # 1,000 images stored class by class
    picked = calibration_sample(labels, 200)
    assert len(picked) == 200 and np.all(np.diff(picked) >= 0)  # split order kept
    assert np.all(np.bincount(picked, minlength=10) > 0)  # every class, not the first two
    np.testing.assert_array_equal(picked, calibration_sample(labels, 200))  # seeded
    assert len(calibration_sample(labels, 5000)) == 1000
