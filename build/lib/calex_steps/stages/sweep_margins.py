"""Stage `sweep_margins`: calibrate and evaluate one trained recipe at every margin.

    python -m calex_steps.stages.sweep_margins --features results/D/B/features.h5 \
        --branches b1.npz b2.npz b3.npz \
        --settings '{"margins": [...], "calibration": "cascade", "split": 1, "split_seed": 0}' \
        --out-table sweep.csv --out-thresholds thresholds.npz --out-exits exits.npz \
        --out-per-class per_class_exits.csv

The branches are trained once; each margin only recalibrates on the validation
split (SPEC section 7) and re-runs the cascade on the test split. Split k > 0
re-draws the held-out samples into calibration and test parts first
(``cascade.sweep.repartition``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from calex_steps.cascade.simulate import cascade_cost
from calex_steps.cascade.sweep import per_class_exits, repartition, sweep
from calex_steps.cli import parse_json_arg, stage_main, stage_parser
from calex_steps.data.branch_files import load_branches
from calex_steps.data.feature_cache import read_sweep_inputs
from calex_steps.data.files import save_csv, save_npz
from calex_steps.errors import CalexError

log = logging.getLogger("calex")
SETTINGS_KEYS = ("margins", "calibration", "split", "split_seed")
CSV_FLOAT = "%.6f"  # fixed float format: the CSVs are byte-identical across reruns


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
    unknown = sorted(set(settings) - set(SETTINGS_KEYS))
    if unknown or "margins" not in settings or "calibration" not in settings:
        raise CalexError(
            f"--settings takes the keys {list(SETTINGS_KEYS)} (margins and calibration "
            f"required); got {sorted(settings)}"
        )
    split_index = int(settings.get("split", 0))
    split_seed = int(settings.get("split_seed", 0))
    splits, info = read_sweep_inputs(Path(features))
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

    val, test, test_pos = repartition(splits["val"], splits["test"], split_index, split_seed)
    stage_cum = [int(info["stage_macs"][a]) for a in info["attach_points"]]
    total = int(info["stage_macs"]["total"])
    costs = cascade_cost(stage_cum, [int(m["head_macs"]) for m in metas], total)
    table, thresholds, exits = sweep(
        val, test, settings["margins"], settings["calibration"], costs, total
    )
    exits["test_index"] = test_pos
    for row in table.itertuples(index=False):
        log.info("margin %.3f: accuracy %.4f, FR %.4f", row.margin, row.accuracy, row.fr)

    counts = per_class_exits(exits, len(branches), info["num_classes"])
    save_csv(table, out_table, CSV_FLOAT)
    save_csv(counts, out_per_class, CSV_FLOAT)
    save_npz(out_thresholds, thresholds)
    save_npz(out_exits, exits)
    return table


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("sweep_margins", __doc__)
    p.add_argument("--features", type=Path, required=True, help="features.h5 of the backbone")
    p.add_argument(
        "--branches", type=Path, nargs="+", required=True, help="branch{l}.npz, in order"
    )
    p.add_argument("--settings", required=True, help='JSON: {"margins": [...], "calibration": ...}')
    for name in ("table", "thresholds", "exits", "per-class"):
        p.add_argument(f"--out-{name}", type=Path, required=True)
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        run_sweep_margins(a.features, a.branches, parse_json_arg(a.settings), a.out_table,
                          a.out_thresholds, a.out_exits, a.out_per_class)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
