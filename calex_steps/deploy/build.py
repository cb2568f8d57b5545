"""One operating point of a trained run as an ONNX cascade: export, compose, save, run.

``onnx_cascade`` builds the ``CascadeModel`` (``cascade.build``), exports its parts
(``onnx_export``) and composes the early-exit graph (``onnx_graph``) with the model's
own thresholds; ``save_model`` and ``save_sidecar`` write it and its JSON sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import helper

from calex_steps.cascade.module import SIGNAL_CODES, CascadeModel
from calex_steps.data.files import save_text
from calex_steps.deploy.onnx_export import OPSET, cut_parts, export_parts
from calex_steps.deploy.onnx_graph import META_KEY, ExitSpec, Parts, compose
from calex_steps.deploy.onnx_runner import (
    SHA_KEY,
    UNSEALED,
    OnnxCascade,
    RunnerError,
    seal,
    verified_bytes,
)
from calex_steps.errors import CalexError
from calex_steps.io import atomic_path

SIGNAL_NAMES = {code: name for name, code in SIGNAL_CODES.items()}


def exit_spec(model: CascadeModel, thresholds: np.ndarray | None = None) -> ExitSpec:
    """The exit rule of ``model`` (its thresholds unless ``thresholds`` replace them)."""
    thr = model.thresholds.cpu().numpy() if thresholds is None else thresholds
    return ExitSpec(
        signal=SIGNAL_NAMES[model.signal],
        thresholds=np.asarray(thr, dtype=np.float64),
        temperatures=list(model.temperatures),
        ens_a=model.ens_a.cpu().numpy().astype(np.float32),
        ens_b=model.ens_b.cpu().numpy().astype(np.float32),
    )


def onnx_meta(model: CascadeModel, spec: ExitSpec, precision: str = "float32") -> dict:
    """What the runner and a reader of the JSON need: names, thresholds, provenance."""
    meta = json.loads(model.meta_json)
    return meta | {
        "class_names": list(model.class_names),
        "num_branches": int(model.num_branches),
        "input_size": int(meta.get("input_size", 32)),
        "thresholds": spec.thresholds.tolist(),
        "temperatures": list(spec.temperatures),
        "precision": precision,
        "opset": OPSET,
        "inputs": {"images": "uint8 N×H×W×3 RGB"},
        "outputs": {
            "pred": "int64 N",
            "exit": "int64 N (L = backbone)",
            "confidence": "float32 N",
        },  # fmt: skip
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },  # fmt: skip
    }


def input_size(model: CascadeModel) -> int:
    """The side of the square images the cascade was built for."""
    return int(json.loads(model.meta_json).get("input_size", 32))


def model_parts(model: CascadeModel) -> Parts:
    """The exported and cut parts of ``model`` (``onnx_export``)."""
    return cut_parts(export_parts(model, input_size(model)), len(model.heads))


def onnx_cascade(model: CascadeModel, parts: Parts | None = None) -> onnx.ModelProto:
    """The float early-exit graph of ``model`` at its own thresholds."""
    spec = exit_spec(model)
    return compose(parts or model_parts(model), spec, onnx_meta(model, spec))


def model_meta(proto: onnx.ModelProto) -> dict:
    """The ``calex`` metadata of an ONNX cascade."""
    return json.loads({p.key: p.value for p in proto.metadata_props}[META_KEY])


def save_model(proto: onnx.ModelProto, out: str | Path) -> None:
    """Write an ONNX cascade atomically, its SHA-256 recorded inside (``onnx_runner.seal``)
    and checked on the written file before it is renamed into place."""
    sealed = onnx.ModelProto()
    sealed.CopyFrom(proto)
    kept = [(p.key, p.value) for p in sealed.metadata_props if p.key != SHA_KEY]
    helper.set_model_props(sealed, dict(kept) | {SHA_KEY: UNSEALED})
    try:
        data = seal(sealed.SerializeToString())
    except RunnerError as exc:
        raise CalexError(f"cannot record the SHA-256 of {out}: {exc}; report this") from exc
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:  # through a handle: a full disk is an OSError
            handle.write(data)
        try:
            verified_bytes(tmp)
        except RunnerError as exc:
            raise CalexError(f"{out} was not written intact ({exc}); nothing was written") from exc


def load_onnx_cascade(path: str | Path, threads: int = 0) -> OnnxCascade:
    """``onnx_runner.OnnxCascade`` of ``path``, its refusals as one-line ``CalexError``s."""
    try:
        return OnnxCascade(path, threads)
    except RunnerError as exc:
        raise CalexError(str(exc)) from exc


def save_sidecar(meta: dict, path: str | Path) -> None:
    """Write the JSON sidecar of an ONNX cascade atomically."""
    save_text(path, json.dumps(meta, indent=1, sort_keys=True) + "\n")


def int8_cascade(
    model: CascadeModel, full: onnx.ModelProto, calibration: np.ndarray, labels,
    settings: dict, threads: int = 0,
) -> tuple[onnx.ModelProto, Parts]:  # fmt: skip
    """The INT8 early-exit graph of ``model`` and its cut parts: ``full`` (its exported
    parts graph) quantized with ranges from ``settings["calibration_images"]`` images of
    ``calibration`` (the calibration split's uint8 images; a seeded sample), the thresholds
    recalibrated on the quantized outputs of the whole split (``labels``: their labels,
    or None) with the recipe's exit rule (``settings``, ``deploy.quantize.recalibrate``)."""
    from calex_steps.deploy.quantize import (
        calibration_sample,
        quantize_graph,
        recalibrate,
        run_parts,
    )

    sample = calibration_sample(calibration, int(settings["calibration_images"]))
    quantized = quantize_graph(full, sample)
    outputs = run_parts(quantized, calibration, threads)
    margin = float(json.loads(model.meta_json)["margin"])
    spec = recalibrate(outputs, labels, exit_spec(model), settings, margin)
    meta = onnx_meta(model, spec, precision="int8")
    meta["calibration_images"] = min(int(settings["calibration_images"]), len(calibration))
    parts = cut_parts(quantized, len(model.heads))
    return compose(parts, spec, meta), parts
