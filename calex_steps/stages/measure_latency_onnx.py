"""Stage `measure_latency_onnx`: time one operating point of every recipe in ONNX Runtime,
float and INT8, against the ONNX backbone (docs/deploy.md).

    python -m calex_steps.stages.measure_latency_onnx --prepared results/D/prepared.h5 \
        --plan '{"recipes": [{"recipe": "calexnet", "run": "results/D/B/calexnet/seed0",
                  "branch_run": "results/D/B/calexnet/seed0", "exit_signal": "branch",
                  "head": "augmented", "settings": {"exit_signal": "branch",
                  "thresholds": "per_class", "calibration": "cascade",
                  "calibration_target": "cpm", "temperature_scaling": false,
                  "calibration_images": 256}}, ...]}' \
        --fr 0.5 --batch-sizes 1 256 --warmup 50 --timed 500 \
        --segments results/D/B/latency/segments_onnx.json --threads 2 \
        --out-table latency_onnx.csv --out-int8 int8.csv

The ONNX Runtime sibling of ``measure_latency``, at the same operating points (the first
seed's margin whose FR is nearest ``--fr``). Per recipe, the float ONNX cascade, the
float ONNX backbone, the INT8 cascade (thresholds recalibrated on its own calibration
outputs) and the INT8 backbone run on the same batches in alternating rounds
(``deploy.measure``). ``latency_onnx.csv`` has the columns of ``latency.csv``, the
predicted speed-up coming from ``segments_onnx.json``; ``int8.csv`` gives, float beside
INT8, the accuracy, FR and exit fractions on the whole test split, the per-sample
times, the speed-ups against the float backbone, and ``multiplies``: the INT8 cascade's
speed-up over the product of the early exit's and INT8's own (1 = they multiply).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from calex_steps.cascade.latency import timed_image_count
from calex_steps.cli import parse_json_arg, stage_main, stage_parser
from calex_steps.data.feature_cache import read_sweep_inputs
from calex_steps.data.files import save_csv
from calex_steps.data.prepared import read_arrays
from calex_steps.deploy.measure import int8_row, latency_row, onnx_point, predicted_speedup
from calex_steps.deploy.measure import time_point as time_graphs
from calex_steps.errors import CalexError
from calex_steps.reporting.latency import MISSING

log = logging.getLogger("calex")
PLAN_KEYS = ("recipe", "run", "branch_run", "exit_signal", "head", "settings")


def run_measure_latency_onnx(plan: list[dict], prepared, fr: float, batch_sizes: list[int],
                             warmup: int, timed: int, out_table, out_int8, segments=None,
                             threads: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Score and time every recipe of ``plan`` at its operating point; write the two CSVs."""
    if warmup < 0 or timed < 1 or not batch_sizes or min(batch_sizes) < 1 or not 0 <= fr < 1:
        raise CalexError("need warmup >= 0, timed >= 1, batch sizes >= 1 and 0 <= --fr < 1")
    if not plan or [e for e in plan if set(PLAN_KEYS) - set(e)]:
        raise CalexError(f"--plan needs one entry per recipe with keys {list(PLAN_KEYS)}")
    timings = None
    if segments is not None:
        try:
            timings = json.loads(Path(segments).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CalexError(
                f"cannot read {segments} ({exc}); rerun measure_segments_onnx"
            ) from exc
    count = timed_image_count(batch_sizes, warmup, timed)
    test = read_arrays(prepared, "test", ("images", "labels"))
    features = Path(plan[0]["run"]).parent.parent / "features.h5"
    calibration = (read_arrays(prepared, "val", ("images",))[0],
                   read_sweep_inputs(features)[0]["val"]["labels"])  # fmt: skip
    rows, int8_rows = [], []
    for entry in plan:
        point = onnx_point(entry, fr, test, calibration, threads)
        log.info("%s margin %g: %s", point.recipe, point.margin, json.dumps(point.scores))
        for batch in sorted(batch_sizes):
            ms, fracs = time_graphs(point, test[0][:count], batch, warmup, timed, threads)
            predicted = predicted_speedup(timings, fracs, point.attach, batch, entry["head"])
            rows.append(latency_row(point, batch, ms, predicted))
            int8_rows.append(int8_row(point, batch, ms))
            log.info("%s batch %d: %s ms per sample; predicted speed-up %.3f", point.recipe,
                     batch, {k: round(v, 4) for k, v in ms.items()}, predicted)  # fmt: skip
    table, int8 = pd.DataFrame(rows), pd.DataFrame(int8_rows)
    save_csv(table, out_table, "%.6g", na_rep=MISSING)
    save_csv(int8, out_int8, "%.6g", na_rep=MISSING)
    return table, int8


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("measure_latency_onnx", __doc__)
    p.add_argument("--prepared", required=True, help="prepared.h5 (test and calibration images)")
    p.add_argument("--plan", required=True, help="JSON object: recipes = list of plan entries")
    p.add_argument("--fr", type=float, default=0.5, help="the FR the operating point is nearest")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 256])
    p.add_argument("--warmup", type=int, default=50, help="warm-up inferences at batch 1")
    p.add_argument("--timed", type=int, default=500, help="timed inferences at batch 1")
    p.add_argument("--segments", help="segments_onnx.json (adds the predicted speed-up)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
    p.add_argument("--out-table", required=True, help="latency_onnx.csv to write")
    p.add_argument("--out-int8", required=True, help="int8.csv to write")
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        plan = parse_json_arg(a.plan, "--plan").get("recipes", [])
        run_measure_latency_onnx(plan, a.prepared, a.fr, a.batch_sizes, a.warmup, a.timed,
                                 a.out_table, a.out_int8, a.segments, a.threads)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
