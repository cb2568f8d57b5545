"""Stage `measure_latency`: time the real cascade against the plain backbone (SPEC section 11).

    python -m calex_steps.measure_latency --prepared results/D/prepared.h5 \
        --runs results/D/B/calexnet/seed0 results/D/B/noalign/seed0 ... \
        --margins 0.01 0.05 ... --batch-sizes 1 8 32 128 512 --warmup 50 --timed 500 \
        --device auto --out-table latency.csv --out-at-fr latency_at_fr.csv \
        --out-crossover crossover.csv

At batch size B every timed call runs B consecutive test images (the test set
cycles), uint8 in, preprocessing included, under ``torch.inference_mode``.
A point takes ``max(1, ceil(warmup / B))`` warm-up calls and
``max(MIN_CALLS, ceil(timed / B))`` timed calls: batch 1 gets exactly
``warmup`` + ``timed`` inferences, larger batches at least ``timed`` samples.
On a GPU the clock reads after ``torch.cuda.synchronize`` and NVML gives the
energy (total-energy counter, else integrated power samples); on the CPU the
energy column holds "not measured".
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from calex_steps.cascade_model import build_cascade, load_thresholds
from calex_steps.io import (
    CalexError,
    add_runtime_args,
    atomic_path,
    resolve_device,
    run_main,
    set_threads,
    setup_logging,
)
from calex_steps.tables import interpolate_curve

NOT_MEASURED = "not measured"
MISSING = "—"
MIN_CALLS = 3
FR_TARGETS = (0.4, 0.5, 0.6, 0.7, 0.8)
POWER_PERIOD_S = 0.005
TABLE_COLUMNS = ["recipe", "seed", "margin", "fr", "accuracy", "batch_size",
                 "latency_ms_per_sample", "backbone_latency_ms_per_sample",
                 "measured_speedup", "flops_speedup", "energy_mj_per_sample",
                 "backbone_energy_mj_per_sample"]  # fmt: skip


def call_counts(batch_size: int, warmup: int, timed: int) -> tuple[int, int]:
    """(warm-up calls, timed calls) of one measurement at ``batch_size`` (module docstring)."""
    return max(1, math.ceil(warmup / batch_size)), max(MIN_CALLS, math.ceil(timed / batch_size))


def batch_views(images: torch.Tensor, batch_size: int, calls: int) -> list[torch.Tensor]:
    """``calls`` batches of consecutive images, cycling through ``images`` (N×H×W×3)."""
    n = images.shape[0]
    starts = [(i * batch_size) % n for i in range(calls)]
    idx = [torch.arange(s, s + batch_size, device=images.device) % n for s in starts]
    return [images.index_select(0, i).contiguous() for i in idx]


class EnergyMeter:
    """GPU energy in mJ over a ``with`` block, from NVML; ``None`` when not measurable."""

    def __init__(self, device: torch.device) -> None:
        self.handle, self.nvml, self.mj = None, None, None
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            index = device.index if device.index is not None else torch.cuda.current_device()
            self.handle, self.nvml = pynvml.nvmlDeviceGetHandleByIndex(index), pynvml
        except Exception:  # no NVML library or driver: energy stays "not measured"
            self.handle = None

    def _counter(self) -> float | None:
        try:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))  # mJ
        except Exception:
            return None

    def _sample_power(self) -> None:
        while not self._stop.is_set():
            watts = self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0  # mW -> W
            self._samples.append((time.perf_counter(), watts))
            time.sleep(POWER_PERIOD_S)

    def __enter__(self) -> EnergyMeter:
        if self.handle is None:
            return self
        self._start = self._counter()
        if self._start is None:
            self._thread = threading.Thread(target=self._sample_power, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.handle is None:
            return
        if self._start is not None:
            self.mj = self._counter() - self._start
            return
        self._stop.set()
        self._thread.join()
        if len(self._samples) >= 2:
            t, w = np.array(self._samples).T
            self.mj = float(np.trapezoid(w, t) * 1000.0)  # W·s -> mJ


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_point(fn: Callable[[torch.Tensor], object], images: torch.Tensor, batch_size: int,
               warmup: int, timed: int) -> tuple[float, float | str]:  # fmt: skip
    """(ms per sample, mJ per sample or "not measured") of ``fn`` at ``batch_size``."""
    device = images.device
    warm_calls, timed_calls = call_counts(batch_size, warmup, timed)
    warm = batch_views(images, batch_size, warm_calls)
    batches = batch_views(images, batch_size, timed_calls)
    with torch.inference_mode():
        for batch in warm:
            fn(batch)
        _sync(device)
        with EnergyMeter(device) as meter:
            began = time.perf_counter()
            for batch in batches:
                fn(batch)
            _sync(device)
            elapsed = time.perf_counter() - began
    samples = batch_size * timed_calls
    energy = NOT_MEASURED if meter.mj is None else meter.mj / samples
    return 1000.0 * elapsed / samples, energy


def interpolate_metric_at_fr(fr, values, targets, tolerance: float = 0.08) -> np.ndarray:
    """A measured quantity (latency, energy) of one curve read at target FRs.

    Points are sorted by FR; points sharing an FR are merged at their mean.
    Linear between points, continued along the end segments up to ``tolerance``
    beyond [min FR, max FR]; NaN further out (and everywhere for no points).
    Unlike ``tables.interpolate_at_fr`` there is no anchor at FR 0: the
    cascade's latency at FR 0 is not the backbone's.
    """
    fr, values = np.asarray(fr, np.float64).ravel(), np.asarray(values, np.float64).ravel()
    keep = np.isfinite(fr) & np.isfinite(values)
    return interpolate_curve(fr[keep], values[keep], targets, tolerance)


def _numeric(column: pd.Series) -> pd.Series:
    """A column as floats; "not measured" becomes NaN."""
    return pd.to_numeric(column, errors="coerce")


def latency_at_fr(table: pd.DataFrame, targets: Sequence[float] = FR_TARGETS) -> pd.DataFrame:
    """Per (recipe, batch size, target FR): latency, energy and measured speed-up, mean over seeds.

    Columns: recipe, batch_size, fr, latency_ms_per_sample, energy_mj_per_sample,
    measured_speedup; NaN where a curve does not reach the target, energy
    "not measured" when the table has no energy numbers.
    """
    rows = []
    energy_known = _numeric(table["energy_mj_per_sample"]).notna().any()
    for (recipe, batch), group in table.groupby(["recipe", "batch_size"], sort=True):
        lat, energy, base = [], [], []
        for _, run in group.groupby("seed"):
            lat.append(interpolate_metric_at_fr(run["fr"], run["latency_ms_per_sample"], targets))
            run_energy = _numeric(run["energy_mj_per_sample"])
            energy.append(interpolate_metric_at_fr(run["fr"], run_energy, targets))
            base.append(run["backbone_latency_ms_per_sample"].mean())
        lat_mean = np.mean(lat, axis=0)
        energy_mean = np.mean(energy, axis=0)
        for i, target in enumerate(targets):
            rows.append({"recipe": recipe, "batch_size": int(batch), "fr": float(target),
                         "latency_ms_per_sample": lat_mean[i],
                         "energy_mj_per_sample": energy_mean[i] if energy_known else NOT_MEASURED,
                         "measured_speedup": float(np.mean(base)) / lat_mean[i]})  # fmt: skip
    return pd.DataFrame(rows)


def crossover_batch_size(reference: dict[int, float], baseline: dict[int, float]) -> int | None:
    """Smallest measured batch size where the reference's latency is below the baseline's.

    Both map batch size -> per-sample latency at one matched FR; NaN entries are
    skipped; ``None`` ("—") when the reference is never faster.
    """
    for batch in sorted(set(reference) & set(baseline)):
        ref, base = reference[batch], baseline[batch]
        if np.isfinite(ref) and np.isfinite(base) and ref < base:
            return int(batch)
    return None


def crossover_table(at_fr: pd.DataFrame, reference: str = "calexnet") -> pd.DataFrame:
    """Per baseline recipe and target FR, the crossover batch size against ``reference``."""
    rows = []
    if reference not in set(at_fr["recipe"]):
        return pd.DataFrame(columns=["reference", "baseline", "fr", "crossover_batch_size"])
    for fr, group in at_fr.groupby("fr", sort=True):
        curves = {r: dict(zip(g["batch_size"], g["latency_ms_per_sample"], strict=True))
                  for r, g in group.groupby("recipe")}  # fmt: skip
        for baseline in sorted(set(curves) - {reference}):
            batch = crossover_batch_size(curves[reference], curves[baseline])
            rows.append({"reference": reference, "baseline": baseline, "fr": float(fr),
                         "crossover_batch_size": MISSING if batch is None else batch})  # fmt: skip
    return pd.DataFrame(rows, columns=["reference", "baseline", "fr", "crossover_batch_size"])


def load_test_images(prepared: str | Path, device: torch.device) -> torch.Tensor:
    """The test split's uint8 images N×32×32×3 on ``device``."""
    if not Path(prepared).is_file():
        raise CalexError(f"prepared file {prepared} does not exist; run prepare_dataset first")
    with h5py.File(prepared, "r") as f:
        return torch.from_numpy(f["test"]["images"][...]).to(device)


def measure_run(run_dir: Path, images: torch.Tensor, margins: Sequence[float],
                batch_sizes: Sequence[int], warmup: int, timed: int,
                backbone: dict[int, tuple]) -> list[dict]:  # fmt: skip
    """Rows of the latency table for one run dir at every margin and batch size.

    ``backbone`` caches the plain backbone's (ms, energy) per batch size; it is
    filled on first use (every run of a dataset and backbone shares it).
    """
    sweep_csv = run_dir / "sweep.csv"
    if not sweep_csv.is_file():
        raise CalexError(f"{sweep_csv} does not exist; run sweep_margins for {run_dir}")
    sweep = pd.read_csv(sweep_csv).set_index("margin")
    model = build_cascade(run_dir, margins[0], device=images.device)
    info = json.loads(model.meta_json)
    log = setup_logging()
    rows = []
    for batch in batch_sizes:
        if batch not in backbone:
            backbone[batch] = time_point(model.backbone_logits, images, batch, warmup, timed)
    for margin in margins:
        model.thresholds.copy_(load_thresholds(run_dir / "thresholds.npz", margin))
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


def _write_csv(frame: pd.DataFrame, out: str | Path) -> None:
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g", na_rep=MISSING, lineterminator="\n")


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
    images = load_test_images(prepared, dev)
    backbone: dict[int, tuple] = {}
    rows = []
    for run in runs:
        rows += measure_run(
            Path(run), images, margins, sorted(batch_sizes), warmup, timed, backbone
        )
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    at_fr = latency_at_fr(table)
    _write_csv(table, out_table)
    _write_csv(at_fr, out_at_fr)
    _write_csv(crossover_table(at_fr, reference), out_crossover)
    return table


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of the stage."""
    p = argparse.ArgumentParser(prog="python -m calex_steps.measure_latency", description=__doc__)
    p.add_argument("--prepared", required=True, help="prepared.h5 (test images)")
    p.add_argument("--runs", nargs="+", required=True, help="run dirs results/D/B/R/seedS")
    p.add_argument("--margins", nargs="+", type=float,
                   default=[0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8])  # fmt: skip
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32, 128, 512])
    p.add_argument("--warmup", type=int, default=50, help="warm-up inferences at batch 1")
    p.add_argument("--timed", type=int, default=500, help="timed inferences at batch 1")
    p.add_argument("--reference", default="calexnet", help="recipe the crossover compares")
    add_runtime_args(p)
    p.add_argument("--out-table", required=True)
    p.add_argument("--out-at-fr", required=True)
    p.add_argument("--out-crossover", required=True)
    return p


def _main(argv) -> None:
    """Parse the arguments and run the stage."""
    a = build_parser().parse_args(argv)
    set_threads(a.threads)
    run_measure_latency(a.runs, a.prepared, a.margins, a.batch_sizes, a.warmup, a.timed,
                        a.device, a.out_table, a.out_at_fr, a.out_crossover,
                        a.reference)  # fmt: skip


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
