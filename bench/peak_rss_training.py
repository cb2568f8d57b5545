"""Benchmark: peak RSS of `train_branch` and `train_joint` on feature caches of N and 2N samples.

    python bench/peak_rss_training.py [--samples 12000] [--channels 48]

Writes two synthetic `features.h5` files laid out as `cache_features` writes them
(three attach points of packed Gram matrices, row chunks of 256, float32; train
N or 2N samples, val and test N/4 each), then runs each stage in a fresh Python
process and reads that process's peak resident set size (getrusage ru_maxrss).
Each stage runs twice per cache: with the default in-RAM budget (the train
split is held in RAM while it fits in `--memory-mb`, default 2048 MB) and
bounded (`--memory-mb 0`: every batch is read from the file). Target: in the
bounded mode the larger cache's peak within 10% of the smaller's.
Features are random numbers: the RSS does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

ATTACH = ["layer1", "layer2", "layer3"]
NUM_CLASSES = 10
HEAD = {"head": "augmented", "weighting": "uniform", "prototypes": 64, "lr": 1e-3,
        "weight_decay": 0.0, "batch_size": 256, "cls_epochs": 2, "conf_epochs": 1}  # fmt: skip
BRANCH = HEAD | {"target": "argmax_ce"}
JOINT = HEAD | {"head": "basic", "target": "pteenet", "pteenet_lambda": 0.9}

MEASURE = """
import resource, sys
from calex_steps.stages import {stage} as stage
code = stage.main(sys.argv[1:])
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def write_cache(path: Path, n_train: int, d: int) -> None:
    """A features.h5 with N train and N/4 val and test samples of packed d×d Grams."""
    rng = np.random.default_rng(0)
    packed = d * (d + 1) // 2
    with h5py.File(path, "w") as f:
        f.attrs.update(features_id="bench", num_classes=NUM_CLASSES)
        f.attrs["attach_points"] = json.dumps(ATTACH)
        f.attrs["stage_macs"] = json.dumps({"layer1": 1, "layer2": 2, "layer3": 3, "total": 4})
        for split, n in (("train", n_train), ("val", n_train // 4), ("test", n_train // 4)):
            g = f.create_group(split)
            logits = rng.normal(size=(n, NUM_CLASSES)).astype(np.float32)
            g["logits"], g["labels"] = logits, logits.argmax(1)
            for b in range(1, len(ATTACH) + 1):
                ds = g.create_dataset(f"feat{b}", (n, packed), "f4", chunks=(256, packed))
                for start in range(0, n, 4096):
                    rows = min(4096, n - start)
                    ds[start : start + rows] = rng.random((rows, packed), dtype=np.float32)
                ds.attrs.update(kind="gram", d=d, h=8, w=8, attach_point=ATTACH[b - 1])


def peak_mb(stage: str, args: list[str]) -> float:
    """Peak RSS (MB) of one stage run in a fresh Python process."""
    cmd = [sys.executable, "-c", MEASURE.format(stage=stage), *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    line = [x for x in result.stdout.splitlines() if x.startswith("PEAK_KB")][-1]
    return int(line.split()[1]) / 1024


def stage_args(stage: str, cache: Path, out: Path, memory: list[str]) -> list[str]:
    common = ["--features", str(cache), "--recipe", "bench", "--device", "cpu", "--threads", "1"]
    if stage == "train_branch":
        settings = json.dumps(BRANCH)
        outs = ["--out-head", str(out / "h.pt"), "--out-outputs", str(out / "o.npz")]
        return [*common, "--branch", "3", "--settings", settings, "--seed", "0", *outs, *memory]
    heads = [str(out / f"h{b}.pt") for b in range(1, 4)]
    outputs = [str(out / f"o{b}.npz") for b in range(1, 4)]
    settings = json.dumps(JOINT)
    return [*common, "--settings", settings, "--seed", "0", "--out-heads", *heads,
            "--out-outputs", *outputs, *memory]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=12000, help="N, train samples of the smaller")
    p.add_argument("--channels", type=int, default=48, help="d of every attach point")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        caches = {}
        for n in (a.samples, 2 * a.samples):
            caches[n] = tmp / f"features{n}.h5"
            write_cache(caches[n], n, a.channels)
        mb = caches[a.samples].stat().st_size / 2**20
        print(f"caches: N = {a.samples} ({mb:.0f} MB on disk) and 2N = {2 * a.samples}; "
              f"d = {a.channels}, 3 attach points, train + val + test")  # fmt: skip
        print(f"{'stage':<14}{'mode':<25}{'peak N (MB)':>12}{'peak 2N (MB)':>14}{'2N / N':>8}")
        for stage in ("train_branch", "train_joint"):
            for mode, memory in (
                ("in RAM (default)", []),
                ("bounded (--memory-mb 0)", ["--memory-mb", "0"]),
            ):  # noqa: E501
                peaks = []
                for n, cache in caches.items():
                    out = tmp / f"{stage}{n}{len(memory)}"
                    out.mkdir()
                    peaks.append(peak_mb(stage, stage_args(stage, cache, out, memory)))
                ratio = peaks[1] / peaks[0]
                print(f"{stage:<14}{mode:<25}{peaks[0]:>12.0f}{peaks[1]:>14.0f}{ratio:>8.3f}")


if __name__ == "__main__":
    main()
