"""Stage `check_onnx`: the ONNX cascade decides every test image as the simulator did.

    python -m calex_steps.stages.check_onnx --model results/D/B/R/seed0/cascade_m0.2.onnx \
        --exits results/D/B/R/seed0/split0/exits.npz --prepared results/D/prepared.h5 \
        --tolerance 1e-5 --threads 2 --out results/D/B/R/seed0/cascade_m0.2_check.json

Runs the exported graph in ONNX Runtime (``deploy.onnx_runner``, no PyTorch) on the
whole test split, in order, and compares its exits and predictions with the sweep's
simulation at the model's margin (``deploy.decisions.compare_decisions``). Images that
differ are counted; those whose simulated signal lies within ``--tolerance`` of a
threshold are expected (float rounding), any other is an error. The report (JSON) also
gives both accuracies and exit fractions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from calex_steps.cli import stage_main, stage_parser
from calex_steps.data.files import save_text
from calex_steps.data.prepared import read_arrays
from calex_steps.deploy.build import load_onnx_cascade
from calex_steps.deploy.decisions import compare_decisions
from calex_steps.deploy.onnx_runner import OnnxCascade
from calex_steps.errors import CalexError

log = logging.getLogger("calex")
BATCH = 256


def run_cascade_on(cascade: OnnxCascade, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pred, exit_branch) of every image, ``BATCH`` at a time."""
    answers = [cascade(images[i : i + BATCH])[:2] for i in range(0, len(images), BATCH)]
    return np.concatenate([a[0] for a in answers]), np.concatenate([a[1] for a in answers])


def run_check_onnx(model, exits, prepared, tolerance: float, out, threads: int = 0) -> dict:
    """Compare the model's decisions on the test split with ``exits``; write the report."""
    if not tolerance >= 0:
        raise CalexError(f"--tolerance must be >= 0, got {tolerance}")
    cascade = load_onnx_cascade(model, threads)
    meta = cascade.meta
    if meta.get("precision") != "float32":
        raise CalexError(f"{model} is a {meta.get('precision')} cascade with recalibrated "
                         "thresholds; check the float export")  # fmt: skip
    if not Path(exits).is_file():
        raise CalexError(f"{exits} does not exist; run sweep_margins first")
    images = read_arrays(prepared, "test", ("images",))[0]
    pred, exit_branch = run_cascade_on(cascade, images)
    with np.load(exits) as z:
        report = compare_decisions(pred, exit_branch, dict(z), float(meta["margin"]),
                                   np.asarray(meta["thresholds"]), tolerance)  # fmt: skip
    report |= {"model": str(model), "recipe": meta.get("recipe"), "seed": meta.get("seed")}
    log.info("%s: %d of %d test images decided otherwise than the simulator, %d of them "
             "within %g of a threshold", model, report["differing"], report["images"],
             report["within_tolerance"], tolerance)  # fmt: skip
    save_text(out, json.dumps(report, indent=1, sort_keys=True) + "\n")
    if report["beyond_tolerance"]:
        first = report["beyond_examples"][0]
        raise CalexError(
            f"{report['beyond_tolerance']} test images leave the ONNX cascade {model} otherwise "
            f"than the simulator and not within {tolerance:g} of a threshold (first: {first}); "
            f"see {out}"
        )
    return report


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("check_onnx", __doc__)
    p.add_argument("--model", type=Path, required=True, help="cascade_m<margin>.onnx")
    p.add_argument("--exits", type=Path, required=True, help="the run's split0/exits.npz")
    p.add_argument("--prepared", type=Path, required=True, help="prepared.h5 (test images)")
    p.add_argument("--tolerance", type=float, default=1e-5,
                   help="how close to its threshold a signal may flip")  # fmt: skip
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
    p.add_argument("--out", type=Path, required=True, help="report to write (.json)")
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        run_check_onnx(a.model, a.exits, a.prepared, a.tolerance, a.out, a.threads)

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
