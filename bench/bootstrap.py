"""Time the tables' bootstrap on a study the size of the real-data benchmark.

Usage: .venv/bin/python bench/bootstrap.py [--recipes 15] [--seeds 3] [--splits 5]
           [--samples 5000] [--margins 56] [--resamples 2000] [--calibration-resamples 10]

Writes seeded split folders of the current sweep format (a three-branch
cascade whose exit fractions grow with the margin, and recalibrated curves near
its own) into a temporary folder, runs make_tables on them (every view, the
bootstrap of docs/results.md) and prints the CPU seconds it took, the share of
the 3 CPU-minutes the real-data study's sweeps and bootstrap may take together
(docs/performance.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from calex_steps.stages.make_tables import run_make_tables

RECIPES = [
    "calexnet",
    "noalign",
    "align_only",
    "kd_only",
    "pteenet",
    "ztw",
    "boostnet",
    "calexnet_matched",
    "calexnet_agree",
    "msp_global",
    "msp_cpm",
    "entropy_global",
    "entropy_cpm",
    "patience_global",
    "patience_cpm",
]  # the real-data study's
PAPER = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8]
COSTS = np.array([0.3, 0.55, 0.8, 1.02])  # MACs fraction per exit position (heads included)
TIMES = np.array([0.35, 0.6, 0.85, 1.05])  # ms per sample per exit position


def write_run(folder: Path, margins, n: int, split: int, rng, recal: int) -> None:
    """frontier.csv, sweep.csv and exits.npz of one run."""
    folder.mkdir(parents=True)
    pool = np.random.default_rng(split).permutation(2 * n)[:n]
    labels = pool % 10
    backbone = np.where(pool % 6 == 0, (labels + 1) % 10, labels)
    conf = rng.random((3, n))
    pred = np.where(rng.random((3, n)) < np.array([[0.55], [0.7], [0.85]]), labels, labels // 2)
    exit_branch = np.full((margins.size, n), 3, dtype=np.int8)
    for row, margin in enumerate(margins):
        for branch in (2, 1, 0):
            exit_branch[row, conf[branch] > 1 - margin * (0.6 + 0.2 * branch)] = branch
    final = np.where(exit_branch < 3, np.take_along_axis(pred, np.minimum(exit_branch, 2), 0),
                     backbone)  # fmt: skip
    table = pd.DataFrame({"margin": margins, "accuracy": (final == labels).mean(1),
                          "fr": 1 - COSTS[exit_branch].mean(1),
                          "lr": 1 - TIMES[exit_branch].mean(1),
                          "backbone_accuracy": (backbone == labels).mean()})  # fmt: skip
    shape = (recal, margins.size)
    near = {f"recal_{key}": table[key].to_numpy()[None] + rng.normal(0, 0.003, shape)
            for key in ("accuracy", "fr", "lr")}  # fmt: skip
    np.savez(folder / "exits.npz", margins=margins, exit_branch=exit_branch, final_pred=final,
             labels=labels, backbone_pred=backbone, test_index=pool, costs=COSTS,
             total_macs=np.array(1.0), times_ms=TIMES, backbone_ms=np.array(1.0),
             pool_size=np.array(2 * n), bootstrap_seed=np.array(0), **near)  # fmt: skip
    table.to_csv(folder / "frontier.csv", index=False, float_format="%.6f")
    table[np.isin(margins, PAPER)].to_csv(folder / "sweep.csv", index=False, float_format="%.6f")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("recipes", 15), ("seeds", 3), ("splits", 5), ("samples", 5000),
                          ("margins", 56), ("resamples", 2000),
                          ("calibration-resamples", 10)):  # fmt: skip
        p.add_argument(f"--{name}", type=int, default=default)
    a = p.parse_args()
    recipes = RECIPES[: a.recipes]
    dense = [float(f"{m:.3g}") for m in np.geomspace(0.001, 0.95, max(a.margins - len(PAPER), 0))]
    margins = np.unique(np.r_[dense, PAPER])
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folders = [Path(tmp, "d", "b", r, f"seed{s}", f"split{k}")
                   for r in recipes for s in range(a.seeds) for k in range(a.splits)]  # fmt: skip
        for folder in folders:
            write_run(
                folder, margins, a.samples, int(folder.name[5:]), rng, a.calibration_resamples
            )
        files = [[f / name for f in folders] for name in ("frontier.csv", "sweep.csv", "exits.npz")]
        settings = {
            "backbones": ["b"],
            "recipes": recipes,
            "resamples": a.resamples,
            "calibration_resamples": a.calibration_resamples,
        }
        cpu, wall = time.process_time(), time.perf_counter()
        run_make_tables(*files, settings, Path(tmp, "tables"))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    runs = len(folders)
    print(f"{runs} runs x {margins.size} margins x {a.samples} images, {a.resamples} resamples")
    print(f"make_tables: {cpu:.1f} s CPU ({wall:.1f} s wall), {cpu / 180:.2f} of the 3 CPU-minutes "
          "the study's sweeps and bootstrap share")  # fmt: skip


if __name__ == "__main__":
    main()
