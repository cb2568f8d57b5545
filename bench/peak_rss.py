"""Peak memory of the stages that read images, on a synthetic image folder and on one twice as big.

    python bench/peak_rss.py [--images 20000] [--size 96] [--work /tmp/calex-rss] [--no-double]

Writes ``--images`` synthetic JPEGs (size×size, 10 classes, 80% train / 10%
val / 10% test; the pixels are seeded noise around a class colour, not a real
dataset) as an image folder, then runs prepare_dataset, pretrain_backbone (one
epoch), import_backbone (a random torchvision ResNet-18 checkpoint, width
0.125, with a 1000-class head), probe_coarse and cache_features on it, each under
``/usr/bin/time -v``, and prints every stage's peak resident memory. The same
again with twice the images shows whether a stage's memory grows with the
dataset (it should not: only with the batch and the shuffling window).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from calex_steps.models.backbones import build_backbone

CLASSES = 10
SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))
BACKBONE = {
    "arch": "torchvision:resnet18",
    "width": 0.125,
    "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
    "new_head": True,
}
PRETRAIN = {"epochs": 1, "batch_size": 128, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
            "crop_padding": 4, "hflip": True, "seed": 0, "crop": "resized",
            "crop_scale": [0.35, 1.0], "shuffle_buffer_mb": 256}  # fmt: skip
PROBE = {"epochs": 2, "batch_size": 256, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4,
         "seed": 0}  # fmt: skip


def write_folder(root: Path, n: int, size: int) -> None:
    """``n`` seeded synthetic JPEGs under ``root/<split>/<class>/``."""
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 216, (CLASSES, 3))
    for split, share in SPLITS:
        per_class = int(n * share) // CLASSES
        for c in range(CLASSES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                noise = rng.integers(-40, 41, (size, size, 3))
                img = (colours[c] + noise).clip(0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)


def timed(stage: str, args: list[str]) -> tuple[float, float]:
    """Run ``python -m calex_steps.stages.<stage> args`` under /usr/bin/time -v:
    (peak RSS in MiB, wall seconds)."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", f"calex_steps.stages.{stage}", *args]
    tic = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - tic
    if done.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{done.stderr[-2000:]}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return kb / 1024, wall


def run_stages(work: Path, n: int, size: int, only=()) -> dict[str, tuple[float, float]]:
    """All measured stages on a fresh folder of ``n`` images; {stage: (MiB, seconds)}."""
    folder, out = work / f"folder{n}", work / f"run{n}"
    out.mkdir(parents=True, exist_ok=True)
    if not (folder / "test").is_dir():
        tic = time.perf_counter()
        write_folder(folder, n, size)
        print(f"wrote {n} images of {size}×{size} in {time.perf_counter() - tic:.0f}s", flush=True)
    weights = work / "resnet18_1000.pth"
    if not weights.is_file():
        torch.save(build_backbone(BACKBONE["arch"], BACKBONE["width"], 1000).state_dict(), weights)
    data = out / "prepared.h5"
    settings = {"source": "image_folder", "root": str(folder), "image_size": size,
                "folders": {"val": "val"}}  # fmt: skip
    common = ["--device", "cpu", "--threads", "2"]
    bb = json.dumps(BACKBONE)
    steps = {
        "prepare_dataset": ["--dataset", "rss", "--settings", json.dumps(settings),
                            "--workers", "2", "--out", str(data)],
        "pretrain_backbone": ["--data", str(data), "--backbone", bb, "--settings",
                              json.dumps(PRETRAIN), *common, "--out", str(out / "pre.pt")],
        "import_backbone": ["--data", str(data), "--backbone", bb, "--checkpoint", str(weights),
                            *common, "--out", str(out / "backbone.pt")],
        "probe_coarse": ["--data", str(data), "--backbone", str(out / "backbone.pt"),
                         "--settings", json.dumps(PROBE), *common, "--out", str(out / "probe.pt")],
        "cache_features": ["--data", str(data), "--backbone", str(out / "backbone.pt"),
                           "--probe", str(out / "probe.pt"), "--attach",
                           json.dumps(["layer1", "layer2", "layer3"]), "--settings",
                           json.dumps({"batch_size": 256}), *common,
                           "--out", str(out / "features.h5")],
    }  # fmt: skip
    results = {}
    for stage, args in steps.items():
        if only and stage not in only:
            continue
        results[stage] = timed(stage, args)
        mib, secs = results[stage]
        print(f"  {n:>6} images  {stage:<18} {mib:8.0f} MiB {secs:7.0f} s", flush=True)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--work", type=Path, default=Path("/tmp/calex-peak-rss"))
    p.add_argument("--no-double", action="store_true", help="skip the run on twice the images")
    p.add_argument("--stages", nargs="*", default=[], help="measure only these (after a full run)")
    a = p.parse_args(argv)
    sizes = [a.images] if a.no_double else [a.images, 2 * a.images]
    table = {n: run_stages(a.work, n, a.size, a.stages) for n in sizes}
    print(f"\npeak RSS per stage (MiB), {a.size}×{a.size} synthetic JPEG folder, 2 threads")
    print(f"{'stage':<18}" + "".join(f"{n:>12,}" for n in sizes))
    for stage in table[sizes[0]]:
        print(f"{stage:<18}" + "".join(f"{table[n][stage][0]:>12.0f}" for n in sizes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
