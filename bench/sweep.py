"""Time the eight-margin sweep of one recipe (SPEC section 7: well under a second).

Usage: .venv/bin/python bench/sweep.py [--samples 10000] [--repeats 5]

Builds seeded random branch outputs (3 branches, 20 classes, confidences that
track correctness, rounded to 3 decimals so that ties occur as in float32
sigmoid outputs of a real head) and prints the best time over a few repeats
for full and cascade calibration.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from calex_steps.cascade.sweep import sweep

MARGINS = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8]
# ResNet18 cumulative MACs after layer1..3 and in all (SPEC section 9) plus small heads.
STAGE_MACS = [152_764_416, 286_982_144, 421_199_872]
HEAD_MACS = [600_000, 400_000, 300_000]
TOTAL_MACS = 555_427_840


def random_split(rng: np.random.Generator, n: int, num_classes: int) -> dict:
    """One split of branch outputs; deeper branches are more accurate."""
    labels = rng.integers(0, num_classes, n)
    backbone = np.where(rng.random(n) < 0.8, labels, rng.integers(0, num_classes, n))
    confs, preds = [], []
    for acc in (0.55, 0.65, 0.75):
        right = rng.random(n) < acc
        wrong = (labels + rng.integers(1, num_classes, n)) % num_classes
        preds.append(np.where(right, labels, wrong))
        conf = np.clip(0.4 + 0.3 * right + rng.normal(0.0, 0.2, n), 0.0, 1.0)
        confs.append(np.round(conf, 3).astype(np.float32))
    return {
        "confs": confs,
        "preds": preds,
        "labels": labels,
        "backbone_pred": backbone,
        "num_classes": num_classes,
    }


def exit_costs() -> list[int]:
    """MACs per exit position: backbone through the stage plus the heads so far."""
    heads = np.cumsum(HEAD_MACS)
    return [s + int(h) for s, h in zip(STAGE_MACS, heads, strict=True)] + [
        TOTAL_MACS + int(heads[-1])
    ]


def best_time(val: dict, test: dict, calibration: str, repeats: int) -> float:
    """Best wall time in seconds of one whole eight-margin sweep."""
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        sweep(val, test, MARGINS, calibration, exit_costs(), TOTAL_MACS)
        times.append(time.perf_counter() - tic)
    return min(times)


def main() -> None:
    """Parse the arguments, build the inputs once, time both calibration modes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000, help="val and test size each")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    val = random_split(rng, args.samples, args.classes)
    test = random_split(rng, args.samples, args.classes)
    for calibration in ("full", "cascade"):
        seconds = best_time(val, test, calibration, args.repeats)
        print(f"{calibration:8s} calibration: {len(MARGINS)}-margin sweep in {seconds:.3f} s")


if __name__ == "__main__":
    main()
