"""Stage `export_cascade`: write one operating point of a trained run as a TorchScript file.

    python -m calex_steps.stages.export_cascade --run-dir results/D/B/R/seed0 \
        --backbone results/D/B/backbone.pt [--probe results/D/B/probe.pt] \
        --features results/D/B/features.h5 --margin 0.2 [--exit-signal ztw_ensemble \
        --branches .../branch1.pt ... --ensembles .../ztw_ensemble1.npz ...] \
        --class-names-from results/D/prepared.h5 --out results/D/B/R/seed0/cascade_m0.2.pt

The artifact is ``torch.jit.script`` of ``cascade.module.CascadeModel``: it
loads with ``torch.jit.load`` alone (no calex import) and carries its class
names, normalisation and thresholds; ``meta_json`` (also stored as the extra
file ``calex.json``) records recipe, seed, margin, backbone and MACs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from calex_steps.cascade.artifact import save_artifact
from calex_steps.cascade.build import build_cascade
from calex_steps.cascade.signals import SIGNALS
from calex_steps.cli import stage_main, stage_parser
from calex_steps.data.prepared import read_class_names

log = logging.getLogger("calex")


def run_export_cascade(run_dir, backbone, probe, features, margin: float,
                       class_names_from, out, thresholds=None, branches=None,
                       exit_signal: str = "branch", ensembles=None) -> dict:  # fmt: skip
    """Build the cascade of ``run_dir`` at ``margin`` and write the artifact; returns its meta."""
    names = read_class_names(class_names_from) if class_names_from else None
    model = build_cascade(run_dir, margin, backbone=backbone, probe=probe, features=features,
                          thresholds=thresholds, class_names=names, branches=branches,
                          exit_signal=exit_signal, ensembles=ensembles)  # fmt: skip
    save_artifact(model, out)
    meta = json.loads(model.meta_json)
    log.info("exported %s (recipe %s, margin %g) to %s", run_dir, meta["recipe"], margin, out)
    return meta


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("export_cascade", __doc__)
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
    p.add_argument("--class-names-from", type=Path, help="prepared.h5 holding class_names")
    p.add_argument("--out", type=Path, required=True, help="artifact to write (.pt)")
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        run_export_cascade(a.run_dir, a.backbone, a.probe, a.features, a.margin,
                           a.class_names_from, a.out, a.thresholds, a.branches, a.exit_signal,
                           a.ensembles)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
