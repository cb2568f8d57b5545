"""Stage `sweep_margins`: calibrate and evaluate one trained recipe at every margin.

Usage:
    python -m calex_steps.sweep_margins --features results/D/B/features.h5 \
        --branches b1.npz b2.npz b3.npz --settings '{"margins": [...], "calibration": "cascade"}' \
        --out-table sweep.csv --out-thresholds thresholds.npz --out-exits exits.npz \
        --out-per-class per_class_exits.csv

The branches are trained once; each margin only recalibrates on the validation
split (SPEC section 7) and re-runs the cascade on the test split.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from calex_steps.calibration import calibrate_cascade, reference_precision
from calex_steps.cascade import cascade_cost, flops_reduction, mean_cost, run_cascade
from calex_steps.io import CalexError, atomic_path, open_h5, parse_json_arg, run_main, setup_logging

CALIBRATIONS = ("full", "cascade")
SETTINGS_KEYS = ("margins", "calibration")
CSV_FLOAT = "%.6f"  # fixed float format: the CSVs are byte-identical across reruns


def margin_key(margin: float) -> str:
    """Key of a margin's thresholds in ``thresholds.npz``, e.g. 0.05 -> ``m0.05``."""
    return f"m{margin:g}"


def sweep_columns(num_branches: int) -> list[str]:
    """Columns of ``sweep.csv`` (docs/formats.md, section Sweep)."""
    fracs = [f"exit_frac_{b}" for b in range(1, num_branches + 1)]
    return [
        "margin",
        "accuracy",
        "fr",
        "backbone_accuracy",
        *fracs,
        "exit_frac_backbone",
        "mean_macs",
    ]


def _check_split(split: dict, name: str) -> int:
    """Check one split's arrays agree in length and branch count; return the branch count."""
    missing = [
        k for k in ("confs", "preds", "labels", "backbone_pred", "num_classes") if k not in split
    ]
    if missing:
        raise CalexError(f"the {name} split lacks {missing}")
    n = np.asarray(split["labels"]).shape[0]
    arrays = [*split["confs"], *split["preds"], split["backbone_pred"]]
    if len(split["confs"]) != len(split["preds"]) or not split["confs"]:
        raise CalexError(f"the {name} split needs one conf and one pred array per branch")
    if any(np.asarray(a).shape != (n,) for a in arrays):
        raise CalexError(f"the {name} split has arrays whose length differs from its {n} labels")
    return len(split["confs"])


def _summary_row(
    margin: float,
    exit_branch: np.ndarray,
    final_pred: np.ndarray,
    labels: np.ndarray,
    costs: np.ndarray,
    total_macs: int,
    backbone_acc: float,
) -> list[float]:
    """One row of the sweep table from the test split's exits (costs: (L+1,) per exit position)."""
    num_exits = costs.shape[0]
    fracs = np.bincount(exit_branch, minlength=num_exits) / exit_branch.shape[0]  # (L+1,)
    accuracy = float(np.mean(final_pred == labels))
    fr = flops_reduction(exit_branch, costs, total_macs)
    return [margin, accuracy, fr, backbone_acc, *fracs, mean_cost(exit_branch, costs)]


def sweep(
    val: dict,
    test: dict,
    margins: Sequence[float],
    calibration: str,
    stage_costs: Sequence[int],
    total_macs: int,
) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Calibrate on ``val`` and evaluate on ``test`` at every margin.

    Args:
        val, test: dicts with ``confs`` and ``preds`` (lists over L branches of (N,)
            arrays), ``labels`` (N,), ``backbone_pred`` (N,) and ``num_classes``.
        margins: CPM margins, distinct, each in [0, 1].
        calibration: ``full`` or ``cascade`` (SPEC section 7).
        stage_costs: (L+1,) MACs of a sample by exit position; the last is the
            cost of reaching the end (``cascade.cascade_cost``).
        total_macs: the whole backbone's MACs, the denominator of FR.

    Returns:
        table: one row per margin, columns ``sweep_columns(L)``.
        thresholds: ``margin_key(m)`` -> (L, C) thresholds.
        exits: ``margins`` (M,), ``exit_branch`` (M, N_test) with L = backbone,
            ``final_pred`` (M, N_test), ``labels`` (N_test,).
    """
    if calibration not in CALIBRATIONS:
        raise CalexError(f"calibration '{calibration}' is not one of {list(CALIBRATIONS)}")
    num_branches = _check_split(val, "val")
    if _check_split(test, "test") != num_branches:
        raise CalexError("val and test hold outputs of a different number of branches")
    try:
        margins = [float(m) for m in margins]
    except (TypeError, ValueError) as exc:
        raise CalexError(f"margins must be a list of numbers, got {margins!r}") from exc
    if not margins or len({margin_key(m) for m in margins}) != len(margins):
        raise CalexError(f"margins {margins} must be a non-empty list of distinct values")
    costs = np.asarray(stage_costs, dtype=np.float64)
    if costs.shape != (num_branches + 1,) or total_macs <= 0:
        raise CalexError(
            f"need {num_branches + 1} exit costs and a positive total, got {costs.shape[0]} "
            f"costs and total {total_macs}"
        )
    num_classes = int(val["num_classes"])
    ref = reference_precision(val["backbone_pred"], val["labels"], num_classes)
    labels = np.asarray(test["labels"], dtype=np.int64)
    backbone_acc = float(np.mean(np.asarray(test["backbone_pred"]) == labels))

    rows, thresholds, exit_rows, pred_rows = [], {}, [], []
    for m in margins:
        thr = calibrate_cascade(
            val["confs"],
            val["preds"],
            val["labels"],
            ref,
            m,
            num_classes,
            cascade_aware=calibration == "cascade",
        )
        exit_branch, final_pred = run_cascade(
            test["confs"], test["preds"], thr, test["backbone_pred"]
        )
        thresholds[margin_key(m)] = np.stack(thr)  # (L, C)
        exit_rows.append(exit_branch)
        pred_rows.append(final_pred)
        rows.append(
            _summary_row(m, exit_branch, final_pred, labels, costs, total_macs, backbone_acc)
        )
    exits = {
        "margins": np.asarray(margins, dtype=np.float64),
        "exit_branch": np.stack(exit_rows),
        "final_pred": np.stack(pred_rows),
        "labels": labels,
    }
    return pd.DataFrame(rows, columns=sweep_columns(num_branches)), thresholds, exits


def per_class_exits(exits: dict, num_branches: int, num_classes: int) -> pd.DataFrame:
    """Exit counts per (margin, exit position, ground-truth class), zeros included.

    Returns:
        columns ``margin, branch, class, count``; ``branch`` is 1..L for the
        branches and L+1 for the backbone; ``class`` is the sample's label.
    """
    slots = (num_branches + 1) * num_classes
    keys = exits["exit_branch"] * num_classes + exits["labels"][None, :]  # (M, N)
    counts = np.stack([np.bincount(k, minlength=slots) for k in keys])  # (M, (L+1)*C)
    margin_col = np.repeat(exits["margins"], slots)
    branch_col = np.tile(np.repeat(np.arange(1, num_branches + 2), num_classes), len(keys))
    class_col = np.tile(np.arange(num_classes), len(keys) * (num_branches + 1))
    return pd.DataFrame(
        {"margin": margin_col, "branch": branch_col, "class": class_col, "count": counts.ravel()}
    )


def _attr_text(attrs, key: str, path: Path) -> str:
    """A string root attribute of an HDF5 file, decoded; CalexError if absent."""
    if key not in attrs:
        raise CalexError(f"{path} has no root attribute '{key}'; rerun cache_features")
    value = attrs[key]
    return value.decode() if isinstance(value, bytes) else str(value)


def load_features(path: Path) -> tuple[dict, dict]:
    """Read labels, backbone predictions and cost attributes from ``features.h5``.

    Returns:
        splits: ``val``/``test`` -> {``labels`` (N,), ``backbone_pred`` (N,)}.
        info: ``features_id``, ``stage_macs`` (dict), ``attach_points`` (list), ``num_classes``.
    """
    with open_h5(path, "cache_features") as f:
        info = {
            "features_id": _attr_text(f.attrs, "features_id", path),
            "stage_macs": json.loads(_attr_text(f.attrs, "stage_macs", path)),
            "attach_points": json.loads(_attr_text(f.attrs, "attach_points", path)),
        }
        splits = {}
        for name in ("val", "test"):
            if name not in f or "labels" not in f[name] or "logits" not in f[name]:
                raise CalexError(
                    f"{path} lacks {name}/labels or {name}/logits; rerun cache_features"
                )
            logits = f[name]["logits"][...]  # (N, C)
            splits[name] = {
                "labels": f[name]["labels"][...].astype(np.int64),
                "backbone_pred": logits.argmax(axis=1).astype(np.int64),
            }
        info["num_classes"] = int(logits.shape[1])
    return splits, info


def load_branch(path: Path, features_id: str) -> tuple[dict, dict]:
    """Read one branch file's val/test exit signals and its ``meta``; check it matches the cache."""
    if not path.is_file():
        raise CalexError(f"branch file {path} does not exist; run train_branch first")
    with np.load(path, allow_pickle=False) as data:
        needed = ["meta", "val_pred", "val_conf", "test_pred", "test_conf"]
        missing = [k for k in needed if k not in data.files]
        if missing:
            raise CalexError(f"branch file {path} lacks {missing}; rerun train_branch")
        meta = json.loads(data["meta"].item())
        arrays = {k: data[k] for k in needed[1:]}
    for key in ("recipe", "seed", "features_id", "head_macs"):
        if key not in meta:
            raise CalexError(f"branch file {path} has no '{key}' in its meta; rerun train_branch")
    if meta["features_id"] != features_id:
        raise CalexError(
            f"branch file {path} was trained on features '{meta['features_id']}', not on the "
            f"current cache '{features_id}'; rerun train_branch"
        )
    return arrays, meta


def load_branches(paths: Sequence[Path], features_id: str) -> list[tuple[dict, dict]]:
    """Load the branch files in cascade order; all must share one recipe and seed."""
    loaded = []
    for number, path in enumerate(map(Path, paths), start=1):
        arrays, meta = load_branch(path, features_id)
        first = loaded[0][1] if loaded else meta
        for key in ("recipe", "seed"):
            if meta[key] != first[key]:
                raise CalexError(
                    f"branch file {path} has {key} {meta[key]!r} but branch 1 has {first[key]!r}; "
                    "pass the branch files of one recipe and seed"
                )
        if "branch" in meta and int(meta["branch"]) != number:
            raise CalexError(f"branch file {path} is branch {meta['branch']}, passed as {number}")
        loaded.append((arrays, meta))
    return loaded


def run_sweep_margins(
    features: Path,
    branches: Sequence[Path],
    settings: dict,
    out_table: Path,
    out_thresholds: Path,
    out_exits: Path,
    out_per_class: Path,
) -> pd.DataFrame:
    """Load the cache and branch files, sweep every margin, write the four outputs."""
    log = setup_logging()
    unknown = sorted(set(settings) - set(SETTINGS_KEYS))
    if unknown or "margins" not in settings or "calibration" not in settings:
        raise CalexError(
            f"--settings needs exactly the keys {list(SETTINGS_KEYS)}; got {sorted(settings)}"
        )
    splits, info = load_features(Path(features))
    if len(branches) != len(info["attach_points"]):
        raise CalexError(
            f"got {len(branches)} branch files but {features} has attach points "
            f"{info['attach_points']}; pass one --branches file per attach point"
        )
    metas = []
    for split in splits.values():
        split.update(confs=[], preds=[], num_classes=info["num_classes"])
    for arrays, meta in load_branches(branches, info["features_id"]):
        metas.append(meta)
        for name, split in splits.items():
            split["confs"].append(arrays[f"{name}_conf"])
            split["preds"].append(arrays[f"{name}_pred"])

    stage_cum = [int(info["stage_macs"][a]) for a in info["attach_points"]]
    total = int(info["stage_macs"]["total"])
    costs = cascade_cost(stage_cum, [int(m["head_macs"]) for m in metas], total)
    table, thresholds, exits = sweep(
        splits["val"], splits["test"], settings["margins"], settings["calibration"], costs, total
    )
    for row in table.itertuples(index=False):
        log.info("margin %.3f: accuracy %.4f, FR %.4f", row.margin, row.accuracy, row.fr)

    counts = per_class_exits(exits, len(branches), info["num_classes"])
    for frame, out in ((table, out_table), (counts, out_per_class)):
        with atomic_path(out) as tmp:
            frame.to_csv(tmp, index=False, float_format=CSV_FLOAT, lineterminator="\n")
    for arrays, out in ((thresholds, out_thresholds), (exits, out_exits)):
        # A file handle, because np.savez would append ".npz" to the temporary name.
        with atomic_path(out) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return table


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of the stage."""
    p = argparse.ArgumentParser(prog="python -m calex_steps.sweep_margins", description=__doc__)
    p.add_argument("--features", type=Path, required=True, help="features.h5 of the backbone")
    p.add_argument(
        "--branches", type=Path, nargs="+", required=True, help="branch{l}.npz, in order"
    )
    p.add_argument("--settings", required=True, help='JSON: {"margins": [...], "calibration": ...}')
    p.add_argument("--out-table", type=Path, required=True)
    p.add_argument("--out-thresholds", type=Path, required=True)
    p.add_argument("--out-exits", type=Path, required=True)
    p.add_argument("--out-per-class", type=Path, required=True)
    return p


def _main(argv) -> None:
    """Parse the arguments and run the stage."""
    args = build_parser().parse_args(argv)
    run_sweep_margins(
        args.features,
        args.branches,
        parse_json_arg(args.settings),
        args.out_table,
        args.out_thresholds,
        args.out_exits,
        args.out_per_class,
    )


def main(argv=None) -> int:
    """Entry point: returns 0 on success, 1 on a CalexError (printed as one line)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
