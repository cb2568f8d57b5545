"""Time the full frontier sweep of one recipe (docs/calibration.md: well under a second).

Usage: .venv/bin/python bench/sweep.py [--samples 10000] [--classes 20] [--repeats 5]
           [--calibration-resamples 0]

Builds seeded random branch outputs (3 branches, confidences that track correctness,
rounded to 3 decimals so that ties occur as in float32 sigmoid outputs of a real head,
and class logits whose argmax is the prediction) and prints, for every calibration
target and calibration set and for the signals computed from logits, the best time
over a few repeats of the whole sweep over the frontier grid (the paper's eight
margins joined with the default dense grid), and its ratio to the 1 s budget. With
``--calibration-resamples R`` each sweep also recalibrates on R bootstrap resamples of
the pool (report.calibration_resamples, docs/results.md), and the time includes them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from calex_steps.cascade.sweep import ExitCosts, ExitRule, margin_grid, sweep
from calex_steps.data.splits import pool_resamples

MARGINS = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8]
DENSE = {"low": 0.001, "high": 0.95, "count": 48}  # the schema's defaults
# ResNet18 cumulative MACs after layer1..3 and in all (docs/method.md#flops) plus small heads.
STAGE_MACS = [152_764_416, 286_982_144, 421_199_872]
HEAD_MACS = [600_000, 400_000, 300_000]
TOTAL_MACS = 555_427_840
BUDGET_S = 1.0
RULES = [
    ExitRule(target=target, calibration=calibration)
    for target in ("cpm", "matched", "agree")
    for calibration in ("full", "cascade")
] + [
    ExitRule(signal="max_softmax", thresholds="global"),
    ExitRule(signal="entropy", calibration="cascade", temperature_scaling=True),
    ExitRule(signal="patience", calibration="cascade", target="matched"),
]


def random_split(rng: np.random.Generator, n: int, num_classes: int) -> dict:
    """One split of branch outputs; deeper branches are more accurate."""
    labels = rng.integers(0, num_classes, n)
    backbone = np.where(rng.random(n) < 0.8, labels, rng.integers(0, num_classes, n))
    confs, preds, logits = [], [], []
    for acc in (0.55, 0.65, 0.75):
        right = rng.random(n) < acc
        wrong = (labels + rng.integers(1, num_classes, n)) % num_classes
        pred = np.where(right, labels, wrong)
        conf = np.clip(0.4 + 0.3 * right + rng.normal(0.0, 0.2, n), 0.0, 1.0)
        z = rng.normal(0.0, 1.0, (n, num_classes))
        z[np.arange(n), pred] += 2.0 + 2.0 * right
        preds.append(pred)
        confs.append(np.round(conf, 3).astype(np.float32))
        logits.append(z.astype(np.float32))
    return {
        "confs": confs,
        "preds": preds,
        "logits": logits,
        "labels": labels,
        "backbone_pred": backbone,
        "num_classes": num_classes,
    }


def exit_costs() -> ExitCosts:
    """MACs per exit position: backbone through the stage plus the heads so far."""
    heads = np.cumsum(HEAD_MACS)
    macs = [s + int(h) for s, h in zip(STAGE_MACS, heads, strict=True)]
    return ExitCosts([*macs, TOTAL_MACS + int(heads[-1])], TOTAL_MACS)


def best_time(val: dict, test: dict, grid: list[float], rule: ExitRule, repeats: int,
              resample=None) -> float:  # fmt: skip
    """Best wall time in seconds of one whole frontier sweep."""
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        sweep(val, test, grid, rule, exit_costs(), resample)
        times.append(time.perf_counter() - tic)
    return min(times)


def describe(rule: ExitRule) -> str:
    if rule.thresholds == "global":
        return f"{rule.signal}, global threshold"
    scaled = ", T fitted" if rule.temperature_scaling else ""
    return f"{rule.signal}, {rule.target} on {rule.calibration}{scaled}"


def main() -> None:
    """Parse the arguments, build the inputs once, time every exit rule."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000, help="val and test size each")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calibration-resamples", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    val = random_split(rng, args.samples, args.classes)
    test = random_split(rng, args.samples, args.classes)
    grid = margin_grid(MARGINS, DENSE)
    n, resamples = args.samples, args.calibration_resamples
    weights = pool_resamples(2 * n, range(1, resamples + 1), 0)
    resample = (weights[:, :n], weights[:, n:]) if resamples else None
    print(f"{len(grid)}-margin frontier, {n} + {n} samples, 3 branches, {args.classes} "
          f"classes, {resamples} recalibrated resamples")  # fmt: skip
    worst = 0.0
    for rule in RULES:
        seconds = best_time(val, test, grid, rule, args.repeats, resample)
        worst = max(worst, seconds)
        print(f"  {describe(rule):42s} {seconds:.3f} s  ({seconds / BUDGET_S:.2f} of the budget)")
    print(f"slowest: {worst:.3f} s = {worst / BUDGET_S:.2f} x the {BUDGET_S:g} s budget")


if __name__ == "__main__":
    main()
