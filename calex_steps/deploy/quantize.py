"""INT8 cascades: ONNX Runtime static quantization, then thresholds recalibrated on the
quantized model's own calibration outputs (docs/deploy.md).

``quantize_graph`` quantizes the exported parts graph (``onnx_export.export_parts``:
every segment, head and the tail, no exit) in QDQ form, INT8 weights per output channel
and UINT8 activations whose ranges come from a seeded sample of the calibration split
(``calibration_sample``; MinMax).
The exit decisions stay in float: the quantized graph is then cut and composed like the
float one. Quantization moves every confidence, so thresholds calibrated on the float
outputs no longer give the same precision: ``recalibrate`` runs the quantized parts on
the whole calibration split and applies the recipe's exit rule (``cascade.sweep``: the
same signal, target, margin and temperature fit) to those outputs.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from scipy.special import expit, log_softmax

from calex_steps.cascade.sweep import ExitRule, exit_signals, rule_thresholds
from calex_steps.deploy.onnx_graph import INPUT, LOGITS, ExitSpec
from calex_steps.errors import CalexError

log = logging.getLogger("calex")
# ONNX Runtime's MinMax calibration keeps every activation of every calibration image
# until it computes the ranges (its option to merge them every few batches drops the
# earlier batches in onnxruntime 1.31), so memory grows with deploy.calibration_images.
CALIBRATION_BATCH = 64


class _Images(CalibrationDataReader):
    """The calibration images, ``CALIBRATION_BATCH`` at a time."""

    def __init__(self, images: np.ndarray) -> None:
        starts = range(0, len(images), CALIBRATION_BATCH)
        self.batches = iter([images[s : s + CALIBRATION_BATCH] for s in starts])

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT: batch}


def calibration_sample(images: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` images drawn without replacement (seeded, in split order): a split may be
    stored grouped by class, and its first images would cover a few classes only."""
    picked = np.random.default_rng(seed).choice(len(images), min(count, len(images)), False)
    return images[np.sort(picked)]


def quantize_graph(full: onnx.ModelProto, images: np.ndarray) -> onnx.ModelProto:
    """The parts graph quantized to INT8 (QDQ, per-channel weights), ranges from ``images``."""
    if len(images) == 0:
        raise CalexError("INT8 quantization needs calibration images; the split is empty")
    with tempfile.TemporaryDirectory(prefix="calex-int8-") as tmp:
        source, target = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(full, str(source))
        with contextlib.redirect_stdout(None):
            quantize_static(
                str(source), str(target), _Images(images), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            )  # fmt: skip
        return onnx.load(str(target))


def run_parts(full: onnx.ModelProto, images: np.ndarray, threads: int = 0,
              batch: int = 256) -> dict[str, np.ndarray]:  # fmt: skip
    """Every ``cls{b}``, ``conf{b}`` and ``logits`` output of a parts graph on ``images``."""
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(full.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    names = [o.name for o in full.graph.output if not o.name.startswith("map")]
    chunks = [session.run(names, {INPUT: images[s : s + batch]})
              for s in range(0, len(images), batch)]  # fmt: skip
    return {n: np.concatenate([c[i] for c in chunks]) for i, n in enumerate(names)}


def branch_outputs(outputs: dict, spec: ExitSpec, count: int) -> tuple[list, list, list]:
    """(signals, predictions, logits) per branch from parts outputs, for the file signals
    (the branch's sigmoid confidence, ZTW's ensemble) as ``cascade.module.exit_signal``;
    logit signals get zeros here, computed from the logits by ``cascade.sweep.exit_signals``."""
    logits = [outputs[f"cls{b}"] for b in range(count)]
    preds = [z.argmax(axis=1).astype(np.int64) for z in logits]
    if spec.signal == "branch":
        confs = [np.take_along_axis(expit(outputs[f"conf{b}"]), p[:, None], axis=1)[:, 0]
                 for b, p in enumerate(preds)]  # fmt: skip
    elif spec.signal == "ztw_ensemble":
        confs, members = [], []
        for b in range(count):
            members.append(log_softmax(logits[b], axis=1))
            weight = np.exp(spec.ens_a[b, : b + 1])[:, None, None]
            ens = (weight * np.stack(members)).sum(axis=0) / (b + 1) + spec.ens_b[b]
            probs = np.exp(log_softmax(ens, axis=1))
            confs.append(probs.max(axis=1))
            preds[b] = probs.argmax(axis=1).astype(np.int64)
    else:
        confs = [np.zeros(len(p)) for p in preds]
    return [np.asarray(c, dtype=np.float64) for c in confs], preds, logits


def recalibrate(outputs: dict, labels, spec: ExitSpec, settings: dict,
                margin: float) -> ExitSpec:  # fmt: skip
    """``spec`` with thresholds (and temperatures) set by the recipe's exit rule on the
    quantized model's calibration outputs ``outputs`` (``run_parts`` on the split)."""
    rule = ExitRule(
        signal=settings.get("exit_signal", spec.signal),
        thresholds=settings.get("thresholds", "per_class"),
        target=settings.get("calibration_target", "cpm"),
        calibration=settings.get("calibration", "full"),
        temperature_scaling=bool(settings.get("temperature_scaling", False)),
    )
    if rule.signal != spec.signal:
        raise CalexError(f"the settings' exit signal {rule.signal} is not the cascade's "
                         f"{spec.signal}; pass the recipe's settings")  # fmt: skip
    count = spec.thresholds.shape[0]
    confs, preds, logits = branch_outputs(outputs, spec, count)
    val = {"confs": confs, "preds": preds, "logits": logits, "labels": labels,
           "backbone_pred": outputs[LOGITS].argmax(axis=1).astype(np.int64),
           "num_classes": spec.thresholds.shape[1]}  # fmt: skip
    val, _, temps = exit_signals(val, val, rule)
    thresholds = rule_thresholds(val, [margin], rule)[0]
    temperatures = spec.temperatures if temps is None else [float(t) for t in temps]
    return ExitSpec(spec.signal, thresholds, temperatures, spec.ens_a, spec.ens_b)
