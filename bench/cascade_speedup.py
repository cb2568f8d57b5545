"""Measured speed-up of the real cascade over the plain backbone, against the FLOPs prediction.

    .venv/bin/python bench/cascade_speedup.py --run-dir results/synthetic/r18tiny/calexnet/seed0

At batch 256 (default) and the margin whose test FR is closest to 0.5 in the
run's sweep.csv, the cascade and the plain backbone (same segments, no heads)
run in alternating rounds over the test images; each round times
``--calls`` batches and the median round counts. Prints both speed-ups and
measured / predicted (target: at least 0.8).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from calex_steps.cascade.build import build_cascade, run_paths
from calex_steps.cascade.latency import batch_views
from calex_steps.models.inference import load_split


def time_round(fn, batches: list[torch.Tensor]) -> float:
    """Seconds for one pass of ``fn`` over ``batches`` (synchronised on a GPU)."""
    device = batches[0].device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    for batch in batches:
        fn(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began


def main() -> None:
    """Parse the arguments, measure, print."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=Path("results/synthetic/r18tiny/calexnet/seed0"))
    p.add_argument("--prepared", type=Path, help="default: results/<dataset>/prepared.h5")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--calls", type=int, default=8, help="batches per timed round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    sweep = pd.read_csv(a.run_dir / "split0" / "sweep.csv")
    row = sweep.iloc[(sweep["fr"] - 0.5).abs().argmin()]
    prepared = a.prepared or run_paths(a.run_dir)["backbone"].parent.parent / "prepared.h5"
    device = torch.device(a.device)
    model = build_cascade(a.run_dir, float(row["margin"]), device=device)
    images = load_split(prepared, "test", "labels")[0].to(device)
    batches = batch_views(images, a.batch_size, a.calls)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
        batches = [model.prepare(b).contiguous(memory_format=torch.channels_last) for b in batches]
    cascade, backbone = [], []
    with torch.inference_mode():
        time_round(model, batches[:1]), time_round(model.backbone_logits, batches[:1])
        for _ in range(a.rounds):  # alternate, so load changes hit both alike
            cascade.append(time_round(model, batches))
            backbone.append(time_round(model.backbone_logits, batches))
    measured = statistics.median(backbone) / statistics.median(cascade)
    predicted = 1.0 / (1.0 - float(row["fr"]))
    print(f"data: {a.run_dir} (test split of {prepared}, {len(images)} images), device {device}, "
          f"threads {torch.get_num_threads()}, channels_last {a.channels_last}")  # fmt: skip
    print(f"operating point: margin {row['margin']:g}, FR {row['fr']:.4f}, "
          f"accuracy {row['accuracy']:.4f}, batch {a.batch_size}")  # fmt: skip
    per_sample = 1000.0 / (a.batch_size * a.calls)
    print(f"backbone {statistics.median(backbone) * per_sample:.4f} ms/sample, "
          f"cascade {statistics.median(cascade) * per_sample:.4f} ms/sample")  # fmt: skip
    print(f"measured speed-up {measured:.3f}, FLOPs speed-up {predicted:.3f}, "
          f"ratio {measured / predicted:.3f} (target >= 0.8)")  # fmt: skip


if __name__ == "__main__":
    main()
