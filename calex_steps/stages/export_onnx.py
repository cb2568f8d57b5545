"""Stage `export_onnx`: write one operating point of a trained run as an ONNX cascade.

    python -m calex_steps.stages.export_onnx --run-dir results/D/B/R/seed0 \
        --backbone results/D/B/backbone.pt [--probe results/D/B/probe.pt] \
        --features results/D/B/features.h5 --margin 0.2 [--exit-signal ztw_ensemble \
        --branches .../branch1.pt ... --ensembles .../ztw_ensemble1.npz ...] \
        --prepared results/D/prepared.h5 --out results/D/B/R/seed0/cascade_m0.2.onnx \
        --out-meta results/D/B/R/seed0/cascade_m0.2.json

The same cascade as ``export_cascade`` (``cascade.build.build_cascade``), as one ONNX
graph (opset 18, dynamic batch) that does the early exit itself: ``deploy.onnx_graph``
explains how. The JSON sidecar (also the model's ``calex`` metadata) holds the class
names, thresholds and provenance. The export is checked with ``onnx.checker`` and by
running it in ONNX Runtime on the first ``--check-images`` test images beside the
PyTorch module: the decisions that differ are counted in the log and the sidecar
(``check``); more than ``MAX_DIFFERING`` of them is an error (a broken export, not
rounding). The image-by-image check against the simulator is rule ``check_onnx``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from calex_steps.cascade.build import build_cascade
from calex_steps.cascade.signals import SIGNALS
from calex_steps.cli import stage_main, stage_parser
from calex_steps.data.prepared import read_arrays, read_class_names
from calex_steps.deploy.build import (
    load_onnx_cascade,
    model_meta,
    model_parts,
    onnx_cascade,
    save_model,
    save_sidecar,
)
from calex_steps.errors import CalexError

log = logging.getLogger("calex")
MAX_DIFFERING = 0.01  # fraction of checked images whose exit or prediction may differ


def check_against_module(model, path: Path, images: np.ndarray, threads: int) -> dict:
    """Run the saved graph and the PyTorch module on ``images``; count what differs."""
    pred, exit_branch, conf = load_onnx_cascade(path, threads)(images)
    with torch.inference_mode():
        ref = [t.numpy() for t in model(torch.from_numpy(images))]
    differ = (pred != ref[0]) | (exit_branch != ref[1])
    same = ~differ
    gap = float(np.abs(conf[same] - ref[2][same]).max()) if same.any() else 0.0
    return {"images": len(images), "differing": int(differ.sum()),
            "max_confidence_difference": gap}  # fmt: skip


def run_export_onnx(run_dir, backbone, probe, features, margin: float, prepared, out,
                    out_meta, thresholds=None, branches=None, exit_signal: str = "branch",
                    ensembles=None, check_images: int = 256, threads: int = 0) -> dict:  # fmt: skip
    """Build the cascade of ``run_dir`` at ``margin``, write the ONNX model and its
    sidecar, check it; returns the sidecar's content."""
    names = read_class_names(prepared)
    model = build_cascade(run_dir, margin, backbone=backbone, probe=probe, features=features,
                          thresholds=thresholds, class_names=names, branches=branches,
                          exit_signal=exit_signal, ensembles=ensembles)  # fmt: skip
    proto = onnx_cascade(model, model_parts(model))
    save_model(proto, out)
    images = read_arrays(prepared, "test", ("images",), check_images)[0]
    check = check_against_module(model, Path(out), images, threads)
    log.info("ONNX Runtime vs PyTorch on %d test images: %d decisions differ, confidence "
             "within %.2g", check["images"], check["differing"],
             check["max_confidence_difference"])  # fmt: skip
    if check["differing"] > MAX_DIFFERING * check["images"]:
        raise CalexError(
            f"the ONNX cascade of {run_dir} decides {check['differing']} of {check['images']} "
            "test images otherwise than the PyTorch module; the export is broken, report it"
        )
    meta = model_meta(proto) | {"check": check}
    save_sidecar(meta, out_meta)
    return meta


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("export_onnx", __doc__)
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
                   help="prepared.h5: class names and the test images of the check")  # fmt: skip
    p.add_argument("--check-images", type=int, default=256, help="test images of the check")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = default)")
    p.add_argument("--out", type=Path, required=True, help="model to write (.onnx)")
    p.add_argument("--out-meta", type=Path, required=True, help="sidecar to write (.json)")
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        run_export_onnx(a.run_dir, a.backbone, a.probe, a.features, a.margin, a.prepared,
                        a.out, a.out_meta, a.thresholds, a.branches, a.exit_signal,
                        a.ensembles, a.check_images, a.threads)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
