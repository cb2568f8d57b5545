"""Benchmark: feature-caching throughput as a ratio to a plain no-grad forward pass.

    python bench/cache_features.py [--arch resnet18] [--width 0.25] [--images 3000]

Both sides read the same prepared file and run the same backbone with the same
batch size and threads; the cache side also computes the Gram matrices and
writes features.h5 (the whole `cache_features` stage). Target: ratio >= 0.8.
Images: the synthetic set (generated here; pixel content does not change the timing).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import torch

from calex_steps.data.prepared import write_prepared
from calex_steps.data.synthetic import make_synthetic
from calex_steps.models.backbones import build_backbone
from calex_steps.models.checkpoints import save_checkpoint
from calex_steps.models.inference import preprocess
from calex_steps.stages.cache_features import run_cache_features

NORM = {"mean": [0.5] * 3, "std": [0.25] * 3}


def plain_forward(prepared: Path, model, batch_size: int) -> float:
    """Seconds for a no-grad forward of every image of every split."""
    tic = time.perf_counter()
    with h5py.File(prepared) as f, torch.inference_mode():
        for split in ("train", "val", "test"):
            images = f[split]["images"]
            for start in range(0, len(images), batch_size):
                model(preprocess(torch.from_numpy(images[start : start + batch_size]), **NORM))
    return time.perf_counter() - tic


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument(
        "--images", type=int, default=3000, help="training images (val and test: a third each)"
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--compact", default="none", help="cache.compact option of the cache side (default none)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = args.images
        splits, names, fine = make_synthetic(n, n // 3, n // 3, 8, 1, 0)
        attrs = {
            "dataset": "bench",
            "source": "synthetic",
            "num_classes": 8,
            "num_fine_classes": 8,
            "class_names": names,
            "fine_class_names": fine,
            "val_source": "generated",
            "split_seed": 0,
            "settings": {},
        }
        write_prepared(tmp / "prepared.h5", splits, attrs)
        model = build_backbone(args.arch, args.width, num_classes=8).eval()
        save_checkpoint(
            tmp / "backbone.pt", model, arch=args.arch, width=args.width, num_classes=8,
            normalization=NORM,
        )  # fmt: skip
        total = n + 2 * (n // 3)
        plain, cache = [], []
        for _ in range(args.repeats):  # interleaved, best of each: robust to a busy machine
            plain.append(plain_forward(tmp / "prepared.h5", model, args.batch_size))
            tic = time.perf_counter()
            run_cache_features(
                tmp / "prepared.h5",
                tmp / "backbone.pt",
                None,
                ["layer1", "layer2", "layer3"],
                {"batch_size": args.batch_size, "compact": args.compact},
                "cpu",
                tmp / "features.h5",
            )
            cache.append(time.perf_counter() - tic)
    print(
        f"data: synthetic, {total} images 32x32; {args.arch} width {args.width}; "
        f"batch {args.batch_size}; {args.threads} threads; cache.compact {args.compact}; "
        f"best of {args.repeats}"
    )
    print(f"plain no-grad forward: {total / min(plain):8.1f} images/s")
    print(f"cache_features stage : {total / min(cache):8.1f} images/s")
    print(f"ratio (cache / plain): {min(plain) / min(cache):.2f}  (target >= 0.8)")


if __name__ == "__main__":
    main()
