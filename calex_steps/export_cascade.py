"""Stage `export_cascade`: write one operating point of a trained run as a TorchScript file.

    python -m calex_steps.export_cascade --run-dir results/D/B/R/seed0 \
        --backbone results/D/B/backbone.pt [--probe results/D/B/probe.pt] \
        --features results/D/B/features.h5 --margin 0.2 \
        --class-names-from results/D/prepared.h5 --out results/D/B/R/seed0/cascade_m0.2.pt

The artifact is ``torch.jit.script`` of ``cascade_model.CascadeModel``: it
loads with ``torch.jit.load`` alone (no calex import) and carries its class
names, normalisation and thresholds; ``meta_json`` (also stored as the extra
file ``calex.json``) records recipe, seed, margin, backbone and MACs.
docs/deploy.md explains why TorchScript and not ``torch.export``.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import h5py
import torch

from calex_steps.cascade_model import CascadeModel, build_cascade
from calex_steps.io import CalexError, atomic_path, run_main, setup_logging

META_FILE = "calex.json"


def read_class_names(prepared: str | Path) -> list[str]:
    """The task class names (root attribute ``class_names``) of a prepared.h5."""
    if not Path(prepared).is_file():
        raise CalexError(f"--class-names-from {prepared} does not exist; pass the prepared.h5")
    try:
        with h5py.File(prepared, "r") as f:
            raw = f.attrs.get("class_names")
    except OSError as exc:
        raise CalexError(f"{prepared} is not a readable HDF5 file ({exc})") from exc
    if raw is None:
        raise CalexError(f"{prepared} has no 'class_names' attribute; rerun prepare_dataset")
    return list(json.loads(raw.decode() if isinstance(raw, bytes) else str(raw)))


def script_cascade(model: CascadeModel) -> torch.jit.ScriptModule:
    """TorchScript of the cascade (the deprecation warning of torch.jit is silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.jit.script(model.cpu().eval())


def save_artifact(model: CascadeModel, out: str | Path) -> None:
    """Script ``model`` and save it atomically, with ``calex.json`` as an extra file."""
    scripted = script_cascade(model)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(scripted, str(tmp), _extra_files={META_FILE: model.meta_json})


def run_export_cascade(run_dir, backbone, probe, features, margin: float,
                       class_names_from, out) -> dict:  # fmt: skip
    """Build the cascade of ``run_dir`` at ``margin`` and write the artifact; returns its meta."""
    log = setup_logging()
    names = read_class_names(class_names_from) if class_names_from else None
    model = build_cascade(run_dir, margin, backbone=backbone, probe=probe, features=features,
                          class_names=names)  # fmt: skip
    save_artifact(model, out)
    meta = json.loads(model.meta_json)
    log.info("exported %s (recipe %s, margin %g) to %s", run_dir, meta["recipe"], margin, out)
    return meta


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of the stage."""
    p = argparse.ArgumentParser(prog="python -m calex_steps.export_cascade", description=__doc__)
    p.add_argument("--run-dir", type=Path, required=True, help="results/D/B/R/seedS")
    p.add_argument("--backbone", type=Path, help="backbone.pt (default: two levels up)")
    p.add_argument("--probe", type=Path, help="probe.pt (hierarchical datasets)")
    p.add_argument("--features", type=Path, help="features.h5 (default: two levels up)")
    p.add_argument("--margin", type=float, required=True, help="a margin of thresholds.npz")
    p.add_argument("--class-names-from", type=Path, help="prepared.h5 holding class_names")
    p.add_argument("--out", type=Path, required=True, help="artifact to write (.pt)")
    return p


def _main(argv) -> None:
    """Parse the arguments and run the stage."""
    a = build_parser().parse_args(argv)
    run_export_cascade(a.run_dir, a.backbone, a.probe, a.features, a.margin,
                       a.class_names_from, a.out)  # fmt: skip


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
