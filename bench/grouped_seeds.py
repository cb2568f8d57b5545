"""Benchmark: S seeds of one branch trained together vs one after another, at real-data shapes.

    python bench/grouped_seeds.py [--samples 50000] [--seeds 3] [--epochs 2]

Writes a synthetic `features.h5` with the shapes of the real-data run
(`config/cifar10_resnet56.yaml`: ResNet-56 attach points layer1, layer2,
layer3.4 as packed Grams of d = 16, 32, 64; N train, 5,000 val and test;
10 classes), then for each attach point trains the calexnet head (augmented,
KD, uniform weighting here) for S seeds: once per seed as the former jobs did
(`run_train_branch`, one seed at a time), and once for all seeds together
(`run_train_branches`). Both run in this process, so the former jobs' process
start-up (importing torch, and torch._dynamo for the optimizer) is not counted:
the ratio is a lower bound of the gain. Prints seconds per attach point and the
ratio together / one after another.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from calex_steps.stages.train_branch import run_train_branch, run_train_branches

ATTACH = {"layer1": 16, "layer2": 32, "layer3.4": 64}
SETTINGS = {"head": "augmented", "target": "kd", "kd_temperature": 4.0, "weighting": "uniform",
            "prototypes": 64, "lr": 1e-3, "weight_decay": 0.0, "batch_size": 256}  # fmt: skip


def write_cache(path: Path, n_train: int) -> None:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs.update(features_id="bench", num_classes=10)
        f.attrs["attach_points"] = json.dumps(list(ATTACH))
        for split, n in (("train", n_train), ("val", 5000), ("test", 5000)):
            g = f.create_group(split)
            g["logits"] = rng.normal(size=(n, 10)).astype(np.float32)
            g["labels"] = g["logits"][...].argmax(1)
            for b, (name, d) in enumerate(ATTACH.items(), start=1):
                p = d * (d + 1) // 2
                ds = g.create_dataset(f"feat{b}", (n, p), "f4", chunks=(min(256, n), p))
                for start in range(0, n, 8192):
                    rows = min(8192, n - start)
                    ds[start : start + rows] = rng.random((rows, p), dtype=np.float32)
                ds.attrs.update(kind="gram", d=d, h=8, w=8, attach_point=name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=50000, help="train samples")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2, help="cls and conf epochs each")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the rule uses 1)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    settings = SETTINGS | {"cls_epochs": a.epochs, "conf_epochs": a.epochs}
    seeds = list(range(a.seeds))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "features.h5"
        write_cache(cache, a.samples)
        print(f"N train = {a.samples}, {a.seeds} seeds, {a.epochs} + {a.epochs} epochs, "
              f"{a.threads} thread(s)")  # fmt: skip
        print(f"{'attach point':<14}{'one by one (s)':>16}{'together (s)':>14}{'ratio':>8}")
        totals = [0.0, 0.0]
        for b, name in enumerate(ATTACH, start=1):
            began = time.perf_counter()
            for s in seeds:
                out = tmp / f"alone{b}_{s}"
                out.mkdir()
                run_train_branch(cache, b, [], settings, s, "cpu", out / "h.pt", out / "o.npz",
                                 recipe="bench")  # fmt: skip
            alone = time.perf_counter() - began
            began = time.perf_counter()
            outs = [tmp / f"together{b}_{s}" for s in seeds]
            for out in outs:
                out.mkdir()
            run_train_branches(cache, b, [[] for _ in seeds], settings, seeds, "cpu",
                               [o / "h.pt" for o in outs], [o / "o.npz" for o in outs],
                               recipe="bench")  # fmt: skip
            together = time.perf_counter() - began
            totals[0] += alone
            totals[1] += together
            print(f"{name:<14}{alone:>16.1f}{together:>14.1f}{together / alone:>8.2f}")
        print(f"{'all':<14}{totals[0]:>16.1f}{totals[1]:>14.1f}{totals[1] / totals[0]:>8.2f}")


if __name__ == "__main__":
    main()
