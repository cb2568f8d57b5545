"""Stage `measure_latency`: time the real cascade against the plain backbone (SPEC section 11).

    python -m calex_steps.stages.measure_latency --prepared results/D/prepared.h5 \
        --runs results/D/B/calexnet/seed0 results/D/B/noalign/seed0 ... \
        --margins 0.01 0.05 ... --batch-sizes 1 8 32 128 512 --warmup 50 --timed 500 \
        --device auto --out-table latency.csv --out-at-fr latency_at_fr.csv \
        --out-crossover crossover.csv

How a point is timed is ``calex_steps.cascade.latency``; how the table is read
at common FRs and batch sizes, ``calex_steps.reporting.latency``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from calex_steps.cascade.build import build_cascade, load_thresholds
from calex_steps.cascade.latency import time_point
from calex_steps.cli import add_runtime_args, resolve_device, stage_main, stage_parser
from calex_steps.data.files import save_csv
from calex_steps.errors import CalexError
from calex_steps.models.inference import load_split
from calex_steps.reporting.latency import MISSING, crossover_table, latency_at_fr

log = logging.getLogger("calex")
TABLE_COLUMNS = ["recipe", "seed", "margin", "fr", "accuracy", "batch_size",
                 "latency_ms_per_sample", "backbone_latency_ms_per_sample",
                 "measured_speedup", "flops_speedup", "energy_mj_per_sample",
                 "backbone_energy_mj_per_sample"]  # fmt: skip


def measure_run(run_dir: Path, images: torch.Tensor, margins: Sequence[float],
                batch_sizes: Sequence[int], warmup: int, timed: int,
                backbone: dict[int, tuple]) -> list[dict]:  # fmt: skip
    """Rows of the latency table for one run dir at every margin and batch size.

    ``backbone`` caches the plain backbone's (ms, energy) per batch size; it is
    filled on first use (every run of a dataset and backbone shares it).
    """
    sweep_csv = run_dir / "split0" / "sweep.csv"
    if not sweep_csv.is_file():
        raise CalexError(f"{sweep_csv} does not exist; run sweep_margins for {run_dir}")
    sweep = pd.read_csv(sweep_csv).set_index("margin")
    model = build_cascade(run_dir, margins[0], device=images.device)
    info = json.loads(model.meta_json)
    rows = []
    for batch in batch_sizes:
        if batch not in backbone:
            backbone[batch] = time_point(model.backbone_logits, images, batch, warmup, timed)
    for margin in margins:
        model.thresholds.copy_(load_thresholds(run_dir / "split0" / "thresholds.npz", margin))
        point = sweep.loc[sweep.index[np.isclose(sweep.index, margin)][0]]
        for batch in batch_sizes:
            ms, energy = time_point(model, images, batch, warmup, timed)
            base_ms, base_energy = backbone[batch]
            rows.append({"recipe": info["recipe"], "seed": info["seed"], "margin": margin,
                         "fr": point["fr"], "accuracy": point["accuracy"], "batch_size": batch,
                         "latency_ms_per_sample": ms, "backbone_latency_ms_per_sample": base_ms,
                         "measured_speedup": base_ms / ms,
                         "flops_speedup": 1.0 / (1.0 - point["fr"]),
                         "energy_mj_per_sample": energy,
                         "backbone_energy_mj_per_sample": base_energy})  # fmt: skip
            log.info("%s seed %s m %g batch %d: %.4f ms/sample (backbone %.4f)",
                     info["recipe"], info["seed"], margin, batch, ms, base_ms)  # fmt: skip
    return rows


def run_measure_latency(runs: Sequence[str | Path], prepared: str | Path,
                        margins: Sequence[float], batch_sizes: Sequence[int], warmup: int,
                        timed: int, device: str, out_table, out_at_fr, out_crossover,
                        reference: str = "calexnet") -> pd.DataFrame:  # fmt: skip
    """Measure every run at every margin and batch size; write the three CSVs.

    Returns the latency table (``TABLE_COLUMNS``).
    """
    if warmup < 0 or timed < 1 or not batch_sizes or min(batch_sizes) < 1 or not margins:
        raise CalexError("need warmup >= 0, timed >= 1, batch sizes >= 1 and at least one margin")
    dev = resolve_device(device)
    images = load_split(prepared, "test", "labels")[0].to(dev)
    backbone: dict[int, tuple] = {}
    rows = []
    for run in runs:
        rows += measure_run(
            Path(run), images, margins, sorted(batch_sizes), warmup, timed, backbone
        )
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    at_fr = latency_at_fr(table)
    for frame, out in ((table, out_table), (at_fr, out_at_fr),
                       (crossover_table(at_fr, reference), out_crossover)):  # fmt: skip
        save_csv(frame, out, "%.6g", na_rep=MISSING)
    return table


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("measure_latency", __doc__)
    p.add_argument("--prepared", required=True, help="prepared.h5 (test images)")
    p.add_argument("--runs", nargs="+", required=True, help="run dirs results/D/B/R/seedS")
    p.add_argument("--margins", nargs="+", type=float,
                   default=[0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8])  # fmt: skip
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32, 128, 512])
    p.add_argument("--warmup", type=int, default=50, help="warm-up inferences at batch 1")
    p.add_argument("--timed", type=int, default=500, help="timed inferences at batch 1")
    p.add_argument("--reference", default="calexnet", help="recipe the crossover compares")
    add_runtime_args(p)
    for name in ("table", "at-fr", "crossover"):
        p.add_argument(f"--out-{name}", required=True)
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        run_measure_latency(a.runs, a.prepared, a.margins, a.batch_sizes, a.warmup, a.timed,
                            a.device, a.out_table, a.out_at_fr, a.out_crossover,
                            a.reference)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
