"""How ``features.h5`` stores its feature arrays on disk, and how big it will be.

``cache.compact`` chooses the storage of the ``feat{l}`` datasets (docs/formats.md):

- ``none``: float32, no filter (the reference);
- ``float16``: half precision, half the bytes;
- ``lzf``: float32 with h5py's byte shuffle + LZF compression (lossless);
- ``float16_lzf``: half precision with shuffle + LZF.

Every option is decoded by HDF5 itself, so a reader that asks for float32
(``np.asarray(ds[a:b], dtype=np.float32)``) gets float32 whatever was chosen.
Logits, labels and indices are always stored exactly (float32 / int64): the
backbone's predictions must not move.

The size estimate is an upper bound (LZF is counted as uncompressed), so the
disk check before writing never lets a cache start that cannot finish.
"""

from __future__ import annotations

import os

import numpy as np

from calex_steps.errors import CalexError
from calex_steps.io import describe_file_system, free_bytes

COMPACT_OPTIONS = ("none", "float16", "lzf", "float16_lzf")
FLOAT16_MAX = float(np.finfo(np.float16).max)
GB = 1e9


def check_compact(compact: str) -> str:
    """The option name, or a one-line CalexError naming the allowed ones."""
    if compact not in COMPACT_OPTIONS:
        raise CalexError(
            f"cache.compact is '{compact}'; choose one of {', '.join(COMPACT_OPTIONS)}"
        )
    return compact


def feature_itemsize(compact: str) -> int:
    """Bytes per stored feature value (before compression)."""
    return 2 if check_compact(compact).startswith("float16") else 4


def feature_dataset_options(compact: str) -> dict:
    """Keyword arguments of ``h5py.Group.create_dataset`` for a ``feat{l}`` dataset."""
    options = {"dtype": "f2" if feature_itemsize(compact) == 2 else "f4"}
    if compact.endswith("lzf"):
        options.update(compression="lzf", shuffle=True)
    return options


def encode_features(entry: np.ndarray, compact: str, where: str) -> np.ndarray:
    """One batch of feature values in the stored dtype.

    Half precision holds magnitudes up to 65504; a larger value would be stored as
    infinity, so it stops the stage instead (``where`` names the split and attach point).
    """
    if feature_itemsize(compact) == 4:
        return entry
    peak = float(np.abs(entry).max()) if entry.size else 0.0
    if not np.isfinite(peak) or peak > FLOAT16_MAX:
        raise CalexError(
            f"{where} holds a feature value of magnitude {peak:.3g}, beyond float16's "
            f"{FLOAT16_MAX:.0f}; set cache.compact: lzf (lossless) or none"
        )
    return entry.astype(np.float16)


def cache_bytes(
    split_sizes: dict[str, int], entry_values: list[int], num_classes: int, compact: str
) -> int:
    """Upper bound of the bytes of a cache.

    Args:
        split_sizes: samples per split.
        entry_values: values per sample of each attach point (d(d+1)/2 or d·H·W).
        num_classes: logits per sample.
        compact: the ``cache.compact`` option.
    """
    per_sample = sum(entry_values) * feature_itemsize(compact) + 4 * num_classes + 3 * 8
    return sum(split_sizes.values()) * per_sample


def check_free_space(out: str | os.PathLike, needed: int, kinds: list[str], compact: str):
    """Refuse, before anything is written, a cache the disk under ``out`` cannot hold.

    ``kinds`` (``gram``/``map`` per attach point) lets the message say which points
    store raw maps, the part that grows with the resolution.
    """
    free = free_bytes(out)
    if needed <= free:
        return
    maps = [str(i) for i, kind in enumerate(kinds, start=1) if kind == "map"]
    stored = f"raw maps at attach point(s) {', '.join(maps)}" if maps else "Gram matrices only"
    fixes = []
    if maps:
        fixes.append("attach at points whose packed Gram form is smaller than the map")
    if compact in ("none", "lzf"):
        fixes.append("set cache.compact: float16 (half the bytes)")
    fixes.append("free space there")
    raise CalexError(
        f"the feature cache {out} needs about {needed / GB:.1f} GB ({stored}) but "
        f"{describe_file_system(out)} cannot hold it; nothing was written; " + ", or ".join(fixes)
    )
