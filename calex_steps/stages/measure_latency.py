"""Stage `measure_latency`: time one operating point of every recipe against the plain backbone
(docs/method.md#latency, docs/deploy.md).

    python -m calex_steps.stages.measure_latency --prepared results/D/prepared.h5 \
        --plan '{"recipes": [{"recipe": "calexnet", "run": "results/D/B/calexnet/seed0",
                  "branch_run": "results/D/B/calexnet/seed0", "exit_signal": "branch",
                  "head": "augmented", "exits": 3}, ...]}' \
        --fr 0.5 --batch-sizes 1 32 256 --warmup 50 --timed 500 \
        [--segments results/D/B/latency/segments.json] --device auto \
        --out-table latency.csv --out-crossover crossover.csv

Per recipe one run (the plan names it: the study's first seed) at one margin: the one of
its frontier (``split0/frontier.csv``) whose FR is nearest ``--fr``. That answers the
question the table asks (how much faster is the cascade at a given FR, against the
backbone, per batch size) without timing every margin of every seed. The exported
(TorchScript) cascade and its plain backbone run on the same batches in alternating
rounds (``cascade.latency.time_parts``, median of ``ROUNDS``), after a warm-up that
passes every timed batch once, so that TorchScript has specialised the cascade to the
survivor counts it will meet; on a GPU a further ``time_point`` pass of each reads
the energy. With ``--segments`` the table also gives the speed-up predicted from the
measured segment times and the exits the cascade takes on the timed images.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from calex_steps.cascade.artifact import script_cascade
from calex_steps.cascade.build import build_cascade, run_paths
from calex_steps.cascade.latency import (
    NOT_MEASURED,
    batch_views,
    call_counts,
    time_parts,
    time_point,
    timed_image_count,
)
from calex_steps.cascade.simulate import segment_times
from calex_steps.cli import (
    add_runtime_args,
    parse_json_arg,
    resolve_device,
    stage_main,
    stage_parser,
)
from calex_steps.data.feature_cache import features_meta
from calex_steps.data.files import save_csv
from calex_steps.errors import CalexError
from calex_steps.models.inference import load_split
from calex_steps.reporting.latency import MISSING, crossover_table, operating_point

log = logging.getLogger("calex")
TABLE_COLUMNS = ["recipe", "seed", "margin", "fr", "lr", "accuracy", "batch_size",
                 "latency_ms_per_sample", "backbone_latency_ms_per_sample",
                 "measured_speedup", "predicted_speedup", "flops_speedup",
                 "energy_mj_per_sample", "backbone_energy_mj_per_sample"]  # fmt: skip
PLAN_KEYS = ("recipe", "run", "branch_run", "exit_signal", "head")  # and "exits" (count)
# Alternating rounds of cascade and backbone: one slow round (another process, a page
# fault storm) moves the median of five by nothing, the mean of one call by a lot.
ROUNDS = 5


def time_against_backbone(scripted, batches: list[torch.Tensor], batch: int, warm_calls: int,
                          rounds: int = ROUNDS) -> tuple[float, float]:  # fmt: skip
    """(cascade ms, backbone ms) per sample on ``batches``: alternating rounds, median."""
    parts = {"cascade": (scripted, batches), "backbone": (scripted.backbone_logits, batches)}
    ms = time_parts(parts, batch, warm_calls, rounds, batches[0].device)
    return ms["cascade"], ms["backbone"]


def energy_per_sample(scripted, images: torch.Tensor, batch: int, warmup: int,
                      timed: int) -> tuple[object, object]:  # fmt: skip
    """(cascade mJ, backbone mJ) per sample from NVML on a GPU; "not measured" elsewhere."""
    if images.device.type != "cuda":
        return NOT_MEASURED, NOT_MEASURED
    return (time_point(scripted, images, batch, warmup, timed)[1],
            time_point(scripted.backbone_logits, images, batch, warmup, timed)[1])  # fmt: skip


def exit_fractions(scripted, batches: list[torch.Tensor], count: int) -> np.ndarray:
    """Fraction of the timed images leaving at each of the ``count`` exits and the backbone."""
    with torch.inference_mode():
        exits = torch.cat([scripted(batch)[1] for batch in batches]).cpu().numpy()
    return np.bincount(exits, minlength=count + 1) / len(exits)


def predicted_speedup(segments: dict | None, fracs: np.ndarray, attach: list[str],
                      batch: int, head: str) -> float:  # fmt: skip
    """backbone time / cascade time predicted from ``segments.json`` and exit fractions.

    The fractions are those of the timed images (``exit_fractions``), not the frontier's:
    at batch 1 a few dozen images are timed, and their exits can differ from the whole
    test split's by enough to move the speed-up by more than a third.
    """
    if segments is None or str(batch) not in segments.get("per_batch", {}):
        return float("nan")
    times, backbone = segment_times(segments, attach, batch, head)
    return backbone / float(np.dot(fracs, times))


def measure_recipe(entry: dict, images: torch.Tensor, fr: float, batch_sizes: list[int],
                   warmup: int, timed: int, segments: dict | None) -> list[dict]:  # fmt: skip
    """Rows of the latency table for one recipe's operating point at every batch size."""
    run, branch_run = Path(entry["run"]), Path(entry["branch_run"])
    point = operating_point(run / "split0" / "frontier.csv", fr)
    count = entry.get("exits") or len(features_meta(run_paths(run)["features"])["attach_points"])
    model = build_cascade(
        run, float(point["margin"]), exit_signal=entry["exit_signal"],
        branches=[branch_run / f"branch{b}.pt" for b in range(1, count + 1)],
        ensembles=[branch_run / f"ztw_ensemble{b}.npz" for b in range(1, count + 1)],
    ).to(images.device)  # fmt: skip
    info = json.loads(model.meta_json)
    scripted = script_cascade(model).to(images.device)
    rows = []
    for batch in batch_sizes:
        warm_calls, timed_calls = call_counts(batch, warmup, timed)
        batches = batch_views(images, batch, timed_calls)
        # the warm-up passes every timed batch: TorchScript specialises on survivor counts
        ms, base_ms = time_against_backbone(scripted, batches, batch,
                                            max(warm_calls, timed_calls))  # fmt: skip
        energy, base_energy = energy_per_sample(scripted, images, batch, warmup, timed)
        fracs = exit_fractions(scripted, batches, count)
        rows.append({"recipe": entry["recipe"], "seed": info["seed"], "margin": point["margin"],
                     "fr": point["fr"], "lr": point.get("lr", float("nan")),
                     "accuracy": point["accuracy"], "batch_size": batch,
                     "latency_ms_per_sample": ms, "backbone_latency_ms_per_sample": base_ms,
                     "measured_speedup": base_ms / ms,
                     "predicted_speedup": predicted_speedup(segments, fracs,
                                                            info["attach_points"], batch,
                                                            entry["head"]),
                     "flops_speedup": 1.0 / (1.0 - point["fr"]),
                     "energy_mj_per_sample": energy,
                     "backbone_energy_mj_per_sample": base_energy})  # fmt: skip
        log.info("%s margin %g (FR %.3f) batch %d: %.4f ms/sample, backbone %.4f",
                 entry["recipe"], point["margin"], point["fr"], batch, ms, base_ms)  # fmt: skip
    return rows


def run_measure_latency(plan: list[dict], prepared, fr: float, batch_sizes: list[int],
                        warmup: int, timed: int, device: str, out_table, out_crossover,
                        segments=None, reference: str = "calexnet") -> pd.DataFrame:  # fmt: skip
    """Time every recipe of ``plan`` at its operating point; write the two CSVs."""
    if warmup < 0 or timed < 1 or not batch_sizes or min(batch_sizes) < 1 or not 0 <= fr < 1:
        raise CalexError("need warmup >= 0, timed >= 1, batch sizes >= 1 and 0 <= --fr < 1")
    bad = [e for e in plan if set(PLAN_KEYS) - set(e)]
    if not plan or bad:
        raise CalexError(f"--plan needs one entry per recipe with keys {list(PLAN_KEYS)}")
    timings = None
    if segments is not None:
        try:
            timings = json.loads(Path(segments).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CalexError(f"cannot read {segments} ({exc}); rerun measure_segments") from exc
    dev = resolve_device(device)
    count = timed_image_count(batch_sizes, warmup, timed)
    images = load_split(prepared, "test", "labels", rows=count)[0].to(dev)
    rows = []
    for entry in plan:
        rows += measure_recipe(entry, images, fr, sorted(batch_sizes), warmup, timed, timings)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    save_csv(table, out_table, "%.6g", na_rep=MISSING)
    save_csv(crossover_table(table, reference), out_crossover, "%.6g", na_rep=MISSING)
    return table


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("measure_latency", __doc__)
    p.add_argument("--prepared", required=True, help="prepared.h5 (test images)")
    p.add_argument("--plan", required=True, help="JSON object: recipes = list of plan entries")
    p.add_argument("--fr", type=float, default=0.5, help="the FR the operating point is nearest")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32, 128, 512])
    p.add_argument("--warmup", type=int, default=50, help="warm-up inferences at batch 1")
    p.add_argument("--timed", type=int, default=500, help="timed inferences at batch 1")
    p.add_argument("--segments", help="segments.json (adds the predicted speed-up)")
    p.add_argument("--reference", default="calexnet", help="recipe the crossover compares")
    add_runtime_args(p)
    for name in ("table", "crossover"):
        p.add_argument(f"--out-{name}", required=True)
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        plan = parse_json_arg(a.plan, "--plan").get("recipes", [])
        run_measure_latency(plan, a.prepared, a.fr, a.batch_sizes, a.warmup, a.timed,
                            a.device, a.out_table, a.out_crossover, a.segments,
                            a.reference)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
