"""Benchmark: the storage options of the feature cache, on one float32 ``features.h5``.

    python bench/cache_formats.py --features results/synthetic/r18tiny/features.h5
    python bench/cache_formats.py --real 500   # CIFAR-10 JPEG + ResNet-56 from ../shared/data
    python bench/cache_formats.py --features F --sweep config/demo.yaml   # + sweep agreement

For each option it rewrites every ``feat{l}`` dataset of the cache (chunks of
256 samples, as the stage writes them), then reads it all back as float32 in
chunks (as the heads read it), and prints the file size, the write and read
times and the error against float32 (largest and mean |error| relative to the
dataset's largest magnitude). The options: the four ``cache.compact`` choices
and bfloat16 with a per-channel scale (stored as uint16 plus a scale vector;
HDF5 cannot decode it, so every reader would need its own decoding step).

``--sweep CONFIG`` also trains the calexnet cascade of CONFIG (its recipe
settings, seed 0, on the CPU) on the float32 cache and on a float16 copy,
sweeps both, and prints the largest accuracy and FR gaps over the margins.

``--real N`` first writes a cache of real data: N CIFAR-10 training images per
class as the train split, the official test split's first N/2 + N/2 per class
as val and test, the shared ResNet-56 as the frozen backbone, attach points
layer1, layer2, layer3.4 (as config/cifar10_resnet56.yaml).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from calex_steps.data.cache_format import encode_features, feature_dataset_options

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
OPTIONS = ("none", "float16", "lzf", "float16_lzf", "bfloat16_scaled")
CHUNK = 256


def _bf16_encode(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), round to nearest even, after dividing by ``scale``."""
    bits = np.ascontiguousarray(x / scale, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(np.uint16)


def _bf16_decode(u: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (u.astype(np.uint32) << 16).view(np.float32) * scale


def _channel_scale(ds: h5py.Dataset) -> np.ndarray:
    """Largest magnitude per channel (axis 1), broadcastable against one chunk."""
    peak = np.zeros(ds.shape[1], np.float32)
    for start in range(0, len(ds), CHUNK):
        block = np.abs(ds[start : start + CHUNK]).reshape(-1, ds.shape[1], *([1] * 0))
        block = block.reshape(len(block), ds.shape[1], -1).max(axis=(0, 2))
        peak = np.maximum(peak, block)
    peak[peak == 0] = 1.0
    return peak.reshape(1, -1, *([1] * (ds.ndim - 2)))


def rewrite(src: Path, dst: Path, option: str) -> float:
    """Copy ``src`` to ``dst`` with the feature datasets stored as ``option``; seconds taken."""
    tic = time.perf_counter()
    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        for split in f:
            group = g.create_group(split)
            for name, ds in f[split].items():
                if not name.startswith("feat"):
                    group.create_dataset(name, data=ds[()]).attrs.update(ds.attrs)
                    continue
                chunks = (min(CHUNK, len(ds)), *ds.shape[1:])
                if option == "bfloat16_scaled":
                    scale = _channel_scale(ds)
                    out = group.create_dataset(name, ds.shape, "u2", chunks=chunks)
                    out.attrs["scale"] = scale.ravel()
                else:
                    out = group.create_dataset(
                        name, ds.shape, chunks=chunks, **feature_dataset_options(option)
                    )
                out.attrs.update(ds.attrs)
                for start in range(0, len(ds), CHUNK):
                    block = ds[start : start + CHUNK]
                    if option == "bfloat16_scaled":
                        out[start : start + len(block)] = _bf16_encode(block, scale)
                    else:
                        out[start : start + len(block)] = encode_features(block, option, name)
    return time.perf_counter() - tic


def read_back(path: Path, ref: Path) -> tuple[float, float, float]:
    """Seconds to read every feature dataset as float32 in chunks; largest and mean error."""
    worst, total, count, seconds = 0.0, 0.0, 0, 0.0
    with h5py.File(path) as f, h5py.File(ref) as r:
        for split in f:
            for name, ds in f[split].items():
                if not name.startswith("feat"):
                    continue
                peak = float(np.abs(r[split][name][()]).max()) or 1.0
                scale = ds.attrs.get("scale")
                for start in range(0, len(ds), CHUNK):
                    tic = time.perf_counter()
                    block = ds[start : start + CHUNK]
                    if scale is not None:
                        shape = (1, -1, *([1] * (ds.ndim - 2)))
                        block = _bf16_decode(block, scale.reshape(shape))
                    block = np.asarray(block, dtype=np.float32)
                    seconds += time.perf_counter() - tic
                    err = np.abs(block - r[split][name][start : start + CHUNK]) / peak
                    worst = max(worst, float(err.max()))
                    total += float(err.sum())
                    count += err.size
    return seconds, worst, total / max(count, 1)


def sweep_gap(ref: Path, configfile: str, tmp: Path) -> None:
    """Train and sweep calexnet on ``ref`` and on its float16 copy; print the gaps (pp)."""
    import pandas as pd

    from calex_steps.stages.sweep_margins import run_sweep_margins
    from calex_steps.stages.train_branch import run_train_branch
    from calex_steps.workflow.config import resolve_recipe, sweep_settings
    from calex_steps.workflow.resource_table import load_study

    cfg = load_study(configfile)
    settings = resolve_recipe(cfg, "calexnet")
    for key in ("calibration", "exit_signal"):
        settings.pop(key)
    dataset = cfg["study"]["datasets"][0]
    sweep = sweep_settings(cfg, "calexnet", dataset, 0)
    rewrite(ref, tmp / "half.h5", "float16")
    with h5py.File(ref) as f, h5py.File(tmp / "half.h5", "a") as g:
        g.attrs.update(f.attrs)  # provenance and costs, as the stage writes them
        g.attrs["compact"] = "float16"
    tables = {}
    for name, features in (("float32", ref), ("float16", tmp / "half.h5")):
        run = tmp / name
        tic = time.perf_counter()
        for b in range(1, len(cfg["backbones"][cfg["study"]["backbones"][0]]["attach_points"]) + 1):
            prev = [run / f"branch{k}.npz" for k in range(1, b)]
            run_train_branch(features, b, prev, settings, 0, "cpu", run / f"branch{b}.pt",
                             run / f"branch{b}.npz", recipe="calexnet")  # fmt: skip
        outs = [run / f for f in ("sweep.csv", "thresholds.npz", "exits.npz", "per_class.csv")]
        run_sweep_margins(features, sorted(run.glob("branch*.npz")), sweep, *outs)
        tables[name] = pd.read_csv(run / "sweep.csv")
        print(
            f"calexnet on the {name} cache: trained and swept in {time.perf_counter() - tic:.0f} s"
        )
    for column in ("accuracy", "fr"):
        gap = 100 * (tables["float16"][column] - tables["float32"][column]).abs()
        print(f"largest {column} gap over {len(gap)} margins: {gap.max():.3f} pp")


def real_cache(per_class: int, tmp: Path) -> Path:
    """features.h5 of real CIFAR-10 JPEG images through the shared ResNet-56 (see module doc)."""
    from PIL import Image

    from calex_steps.data.prepared import write_prepared
    from calex_steps.stages.cache_features import run_cache_features
    from calex_steps.stages.import_backbone import run_import_backbone

    data = np.load(SHARED / "cifar10_jpeg.npz")

    def pick(split: str, first: int, count: int) -> dict:
        labels, offsets, blob = (data[f"{split}_{k}"] for k in ("labels", "offsets", "jpeg"))
        idx = np.concatenate(
            [np.flatnonzero(labels == c)[first : first + count] for c in range(10)]
        )
        images = np.stack(
            [
                np.asarray(Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes())))
                for i in idx
            ]
        )
        y = labels[idx].astype(np.int64)
        return {"images": images, "labels": y, "fine_labels": y, "index": idx.astype(np.int64)}

    half = per_class // 2
    splits = {"train": pick("train", 0, per_class), "val": pick("test", 0, half)}
    splits["test"] = pick("test", half, half)
    names = [str(c) for c in data["classes"]]
    attrs = {"dataset": "cifar10_jpeg", "source": "cifar10", "num_classes": 10,
             "num_fine_classes": 10, "class_names": names, "fine_class_names": names,
             "val_source": "test", "split_seed": 0, "settings": {}}  # fmt: skip
    write_prepared(tmp / "prepared.h5", splits, attrs)
    norm = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    backbone = {"arch": "resnet56", "width": 1.0, "normalization": norm}
    weights = next((SHARED / "cifar10_resnet_weights").glob("resnet56-*.th"))
    run_import_backbone(tmp / "prepared.h5", backbone, weights, "cpu", tmp / "backbone.pt")
    out = tmp / "features.h5"
    attach = ["layer1", "layer2", "layer3.4"]
    run_cache_features(
        tmp / "prepared.h5", tmp / "backbone.pt", None, attach, {"batch_size": 256}, "cpu", out
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", type=Path, help="a float32 features.h5 (cache.compact: none)")
    src.add_argument("--real", type=int, metavar="N", help="real CIFAR-10 images per class")
    p.add_argument("--sweep", metavar="CONFIG", help="also compare calexnet sweeps (see above)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ref = args.features or real_cache(args.real, tmp)
        with h5py.File(ref) as f:
            n = sum(len(f[s]["labels"]) for s in f)
            kinds = [f["train"][k].attrs["kind"] for k in sorted(f["train"]) if "feat" in k]
        print(f"cache: {ref if args.features else 'real CIFAR-10 + ResNet-56'}; {n} samples; "
              f"attach points stored as {', '.join(map(str, kinds))}")  # fmt: skip
        print(f"{'option':<16}{'size MB':>9}{'ratio':>7}{'write s':>9}{'read s':>8}"
              f"{'max err':>10}{'mean err':>10}")  # fmt: skip
        base = None
        for option in OPTIONS:
            out = tmp / f"{option}.h5"
            write = min(rewrite(ref, out, option) for _ in range(2))
            read, worst, mean = min(read_back(out, ref) for _ in range(2))
            size = out.stat().st_size / 1e6
            base = base or size
            print(f"{option:<16}{size:9.1f}{size / base:7.2f}{write:9.2f}{read:8.2f}"
                  f"{worst:10.2e}{mean:10.2e}")  # fmt: skip
        if args.sweep:
            sweep_gap(ref, args.sweep, tmp)


if __name__ == "__main__":
    main()
