"""Stage `sweep_margins`: calibrate and evaluate one trained recipe at every margin.

    python -m calex_steps.stages.sweep_margins --features results/D/B/features.h5 \
        --branches b1.npz b2.npz b3.npz \
        --settings '{"margins": [...], "dense": {"low": 0.001, "high": 0.95, "count": 48},
                     "calibration": "cascade", "calibration_target": "cpm",
                     "exit_signal": "branch", "thresholds": "per_class",
                     "temperature_scaling": false, "split": 1, "split_seed": 0,
                     "redraw": true, "lr_batch_size": 256, "latency_head": "augmented",
                     "bootstrap_seed": 0, "calibration_resamples": 10}' \
        [--segments results/D/B/latency/segments.json] \
        --out-table sweep.csv --out-frontier frontier.csv --out-thresholds thresholds.npz \
        --out-exits exits.npz --out-per-class per_class_exits.csv

The branches are trained once; each margin only recalibrates on the calibration part
and re-runs the cascade on the test part (docs/method.md#calibration, docs/calibration.md). With
``redraw`` (the default for split k > 0) the held-out samples are re-drawn into those
parts first (``cascade.sweep.sweep_split``). ``sweep.csv`` holds the paper's margins,
``frontier.csv`` every margin of the frontier grid. With ``--segments`` the tables
also report the latency reduction predicted from measured segment times. With
``calibration_resamples`` R > 0, ``exits.npz`` also holds the curves of R bootstrap
resamples of the held-out pool, each recalibrated on its calibration part: the
calibration noise in the tables' intervals (docs/results.md, section Intervals).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from calex_steps.cascade.signals import FILE_SIGNALS
from calex_steps.cascade.simulate import cascade_cost, segment_times
from calex_steps.cascade.sweep import (
    ExitCosts,
    ExitRule,
    compact,
    margin_grid,
    margin_key,
    per_class_exits,
    sweep_split,
)
from calex_steps.cli import parse_json_arg, stage_main, stage_parser
from calex_steps.data.branch_files import exit_points, load_branches, read_branch_logits
from calex_steps.data.feature_cache import read_sweep_inputs
from calex_steps.data.files import save_csv, save_npz
from calex_steps.errors import CalexError

log = logging.getLogger("calex")
RULE_KEYS = {  # settings key -> ExitRule field
    "exit_signal": "signal",
    "thresholds": "thresholds",
    "calibration_target": "target",
    "calibration": "calibration",
    "temperature_scaling": "temperature_scaling",
}
SETTINGS_KEYS = (
    "margins",
    "dense",
    *RULE_KEYS,
    "split",
    "split_seed",
    "redraw",
    "lr_batch_size",
    "latency_head",
    "bootstrap_seed",
    "calibration_resamples",
)
SETTINGS = ("sweep", "recipes.*", "latency", "$defs.stage_inputs", "report")
"""Where the keys of --settings come from in the configuration schema (calex_steps/schema.py)."""
CSV_FLOAT = "%.6f"  # fixed float format: the CSVs are byte-identical across reruns


def exit_rule(settings: dict) -> ExitRule:
    """The exit rule of ``--settings`` (per-class thresholds need ``calibration``)."""
    unknown = sorted(set(settings) - set(SETTINGS_KEYS))
    per_class = settings.get("thresholds", "per_class") == "per_class"
    if unknown or "margins" not in settings or (per_class and "calibration" not in settings):
        raise CalexError(
            f"--settings takes the keys {list(SETTINGS_KEYS)} (margins required, and "
            f"calibration with per-class thresholds); got {sorted(settings)}"
        )
    return ExitRule(**{field: settings[key] for key, field in RULE_KEYS.items() if key in settings})


def load_splits(features: Path, branches: Sequence[Path], logits: bool) -> tuple[dict, dict, list]:
    """val/test dicts for ``cascade.sweep.sweep``, the cache's info and the branch metas."""
    splits, info = read_sweep_inputs(Path(features))
    for split in splits.values():
        split.update(confs=[], preds=[], num_classes=info["num_classes"])
    metas = []
    for arrays, meta in load_branches(branches, info["features_id"]):
        metas.append(meta)
        for name, split in splits.items():
            split["confs"].append(arrays[f"{name}_conf"])
            split["preds"].append(arrays[f"{name}_pred"])
    info["exits"] = exit_points(metas, info["attach_points"], features)
    if logits:
        members, _ = read_branch_logits(
            branches, metas[0]["recipe"], metas[0]["seed"], info["features_id"], tuple(splits)
        )
        for name, split in splits.items():
            split["logits"] = members[name]
    return splits, info, metas


def exit_costs(info: dict, metas: list, settings: dict, segments: Path | None) -> ExitCosts:
    """MACs per exit position and, with ``segments``, predicted milliseconds."""
    stage_cum = [int(info["stage_macs"][a]) for a in info["exits"]]
    total = int(info["stage_macs"]["total"])
    macs = cascade_cost(stage_cum, [int(m["head_macs"]) for m in metas], total)
    if segments is None:
        return ExitCosts(macs, total)
    if "latency_head" not in settings:
        raise CalexError("--segments needs 'latency_head' (the head kind) in --settings")
    try:
        measured = json.loads(Path(segments).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CalexError(f"cannot read {segments} ({exc}); rerun measure_segments") from exc
    batch = int(settings.get("lr_batch_size", 256))
    times, backbone = segment_times(measured, info["exits"], batch, settings["latency_head"])
    return ExitCosts(macs, total, times, backbone)


def run_sweep_margins(
    features: Path,
    branches: Sequence[Path],
    settings: dict,
    out_table: Path,
    out_thresholds: Path,
    out_exits: Path,
    out_per_class: Path,
    out_frontier: Path | None = None,
    segments: Path | None = None,
) -> pd.DataFrame:
    """Load the cache and branch files, sweep every margin, write the five outputs.

    ``out_frontier`` defaults to ``frontier.csv`` beside ``out_table``. Returns the
    paper-grid table (``sweep.csv``).
    """
    rule = exit_rule(settings)
    split_index = int(settings.get("split", 0))
    split_seed = int(settings.get("split_seed", 0))
    redraw = bool(settings.get("redraw", split_index > 0))
    grid = margin_grid(settings["margins"], settings.get("dense"))
    splits, info, metas = load_splits(features, branches, rule.signal not in FILE_SIGNALS)
    costs = exit_costs(info, metas, settings, segments)

    part = split_index if redraw else 0
    table, thresholds, exits = sweep_split(
        splits["val"], splits["test"], part, split_seed, grid, rule, costs,
        int(settings.get("calibration_resamples", 0)), int(settings.get("bootstrap_seed", 0)),
    )  # fmt: skip
    exits |= {
        "split": np.int64(split_index),
        "split_seed": np.int64(split_seed),
        "redrawn": np.bool_(redraw),
    }
    paper = {margin_key(float(m)) for m in settings["margins"]}
    in_paper = table["margin"].map(lambda m: margin_key(m) in paper).to_numpy()
    for row in table[in_paper].itertuples(index=False):
        log.info("margin %.3f: accuracy %.4f, FR %.4f", row.margin, row.accuracy, row.fr)

    counts = per_class_exits(exits, len(branches), info["num_classes"], settings["margins"])
    save_csv(table[in_paper], out_table, CSV_FLOAT)
    save_csv(table, out_frontier or Path(out_table).with_name("frontier.csv"), CSV_FLOAT)
    save_csv(counts, out_per_class, CSV_FLOAT)
    save_npz(out_thresholds, thresholds)
    save_npz(out_exits, compact(exits))
    return table[in_paper].reset_index(drop=True)


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("sweep_margins", __doc__)
    p.add_argument("--features", type=Path, required=True, help="features.h5 of the backbone")
    p.add_argument(
        "--branches", type=Path, nargs="+", required=True, help="branch{l}.npz, in order"
    )
    p.add_argument("--settings", required=True, help="JSON: margins, exit rule, split")
    p.add_argument("--segments", type=Path, help="segments.json of measure_segments (optional)")
    for name in ("table", "frontier", "thresholds", "exits", "per-class"):
        p.add_argument(f"--out-{name}", type=Path, required=name != "frontier")
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        settings = parse_json_arg(a.settings, schema=SETTINGS)
        run_sweep_margins(a.features, a.branches, settings, a.out_table,
                          a.out_thresholds, a.out_exits, a.out_per_class, a.out_frontier,
                          a.segments)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
