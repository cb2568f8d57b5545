"""Stage `quantize_onnx`: one operating point of a trained run as an INT8 ONNX cascade.

    python -m calex_steps.stages.quantize_onnx --run-dir results/D/B/R/seed0 \
        [--backbone ... --probe ... --features ... --thresholds ... --branches ... \
         --exit-signal ... --ensembles ...] --margin 0.2 --prepared results/D/prepared.h5 \
        --settings '{"exit_signal": "branch", "thresholds": "per_class",
                     "calibration": "cascade", "calibration_target": "cpm",
                     "temperature_scaling": false, "calibration_images": 256}' \
        --out results/D/B/R/seed0/cascade_m0.2_int8.onnx \
        --out-meta results/D/B/R/seed0/cascade_m0.2_int8.json

The cascade of ``export_onnx``, its network quantized by ONNX Runtime's static
quantization (INT8 per-channel weights, UINT8 activations whose ranges come from a
seeded sample of ``calibration_images`` images of the calibration split) and its thresholds
recalibrated at the same margin, with the recipe's exit rule, on the quantized model's
own outputs over the whole calibration split (``deploy.quantize``). The sidecar gives
the recalibrated thresholds and the INT8 cascade's accuracy and exit fractions on the
test split beside the float simulation's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from calex_steps.cascade.build import build_cascade, run_paths
from calex_steps.cascade.signals import SIGNALS
from calex_steps.cli import parse_json_arg, stage_main, stage_parser
from calex_steps.data.feature_cache import read_sweep_inputs
from calex_steps.data.prepared import read_arrays, read_class_names
from calex_steps.deploy.build import (
    input_size,
    int8_cascade,
    load_onnx_cascade,
    model_meta,
    save_model,
    save_sidecar,
)
from calex_steps.deploy.decisions import exit_fractions
from calex_steps.deploy.onnx_export import export_parts
from calex_steps.errors import CalexError

log = logging.getLogger("calex")


def run_quantize_onnx(run_dir, margin: float, prepared, settings: dict, out, out_meta,
                      backbone=None, probe=None, features=None, thresholds=None,
                      branches=None, exit_signal: str = "branch", ensembles=None,
                      threads: int = 0) -> dict:  # fmt: skip
    """Build, quantize and recalibrate the cascade of ``run_dir`` at ``margin``; write it."""
    if int(settings.get("calibration_images", 0)) < 1:
        raise CalexError("--settings needs calibration_images >= 1 (deploy.calibration_images)")
    features = features or run_paths(run_dir)["features"]
    model = build_cascade(run_dir, margin, backbone=backbone, probe=probe, features=features,
                          thresholds=thresholds, class_names=read_class_names(prepared),
                          branches=branches, exit_signal=exit_signal,
                          ensembles=ensembles)  # fmt: skip
    calibration = read_arrays(prepared, "val", ("images",))[0]
    labels = read_sweep_inputs(Path(features))[0]["val"]["labels"]
    full = export_parts(model, input_size(model))
    proto = int8_cascade(model, full, calibration, labels, settings, threads)[0]
    save_model(proto, out)
    images, test_labels = read_arrays(prepared, "test", ("images", "labels"))
    cascade = load_onnx_cascade(out, threads)
    answers = [cascade(images[s : s + 256]) for s in range(0, len(images), 256)]
    pred = np.concatenate([a[0] for a in answers])
    exits = np.concatenate([a[1] for a in answers])
    meta = model_meta(proto) | {
        "test": {"images": len(pred), "accuracy": float(np.mean(pred == test_labels)),
                 "exit_fractions": exit_fractions(exits, len(model.heads))},
    }  # fmt: skip
    save_sidecar(meta, out_meta)
    log.info("INT8 cascade of %s at margin %g: test accuracy %.4f, exit fractions %s", run_dir,
             margin, meta["test"]["accuracy"],
             [round(f, 3) for f in meta["test"]["exit_fractions"]])  # fmt: skip
    return meta


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("quantize_onnx", __doc__)
    p.add_argument("--run-dir", type=Path, required=True, help="results/D/B/R/seedS")
    p.add_argument("--backbone", type=Path, help="backbone.pt (default: two levels up)")
    p.add_argument("--probe", type=Path, help="probe.pt (hierarchical datasets)")
    p.add_argument("--features", type=Path, help="features.h5 (default: two levels up)")
    p.add_argument("--thresholds", type=Path, help="thresholds.npz (default: RUN/split0/)")
    p.add_argument("--branches", type=Path, nargs="+", help="branch{l}.pt (default: RUN/)")
    p.add_argument("--exit-signal", default="branch", choices=SIGNALS,
                   help="the recipe's exit_signal")  # fmt: skip
    p.add_argument("--ensembles", type=Path, nargs="+",
                   help="ztw_ensemble{l}.npz (exit signal ztw_ensemble; default RUN/)")  # fmt: skip
    p.add_argument("--margin", type=float, required=True, help="a margin of thresholds.npz")
    p.add_argument("--prepared", type=Path, required=True,
                   help="prepared.h5: class names, calibration and test images")  # fmt: skip
    p.add_argument("--settings", required=True,
                   help="JSON: the recipe's exit rule and calibration_images")  # fmt: skip
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = default)")
    p.add_argument("--out", type=Path, required=True, help="model to write (.onnx)")
    p.add_argument("--out-meta", type=Path, required=True, help="sidecar to write (.json)")
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        run_quantize_onnx(a.run_dir, a.margin, a.prepared, parse_json_arg(a.settings), a.out,
                          a.out_meta, a.backbone, a.probe, a.features, a.thresholds,
                          a.branches, a.exit_signal, a.ensembles, a.threads)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
