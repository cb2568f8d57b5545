"""``prepared.h5``: the one uniform file every source becomes (docs/formats.md).

Three splits of uint8 images N×H×W×3 (RGB, HWC, any H = W) with task labels,
fine labels and the index of each sample in its original source split, plus
root attributes saying where they came from. Images are stored in chunks of
about ``CHUNK_BYTES``, written batch by batch and read back the same way
(``image_chunk_rows``), so no stage needs a whole split in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from calex_steps import __version__
from calex_steps.errors import CalexError
from calex_steps.io import atomic_path, hdf5_output, require_space

SPLITS = ("train", "val", "test")
CHUNK_BYTES = 1 << 20  # about 1 MiB of pixels per HDF5 chunk
_JSON_ATTRS = ("class_names", "fine_class_names", "settings")


def write_prepared(path: str | Path, splits: dict[str, dict[str, np.ndarray]], attrs: dict) -> None:
    """Write ``prepared.h5`` (docs/formats.md) atomically; lists and dicts become JSON.

    ``splits[split]["images"]`` is an array, or an object with ``shape`` and
    ``batches()`` yielding ``(start, uint8 batch)`` (``FolderImages``): it is
    then written batch by batch and never held whole. A file system that cannot
    hold the file is refused before anything is written.
    """
    require_space(path, prepared_bytes(splits), "the prepared file")
    with atomic_path(path) as tmp, hdf5_output(tmp) as f:
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value) if key in _JSON_ATTRS else value
        f.attrs["calex_version"] = __version__
        for split in SPLITS:
            group = f.create_group(split)
            for name, arr in splits[split].items():
                if name == "images":
                    _write_images(group, arr)
                else:
                    group.create_dataset(name, data=arr)


HDF5_OVERHEAD = 1 << 16
"""Bytes of an HDF5 file beyond its arrays (superblock, groups, attributes, chunk index),
generously: the prepared file has a dozen datasets."""


def prepared_bytes(splits: dict[str, dict]) -> int:
    """The size ``prepared.h5`` will have: every array's bytes plus the HDF5 overhead."""
    total = HDF5_OVERHEAD
    for split in SPLITS:
        for name, arr in splits[split].items():
            itemsize = 1 if name == "images" else np.asarray(arr).dtype.itemsize
            total += int(np.prod(arr.shape)) * itemsize
    return total


def image_chunk_rows(shape: tuple[int, ...]) -> int:
    """Images per HDF5 chunk: about ``CHUNK_BYTES`` of pixels, at least one image."""
    n, per_image = shape[0], int(np.prod(shape[1:]))
    return max(1, min(n, CHUNK_BYTES // max(per_image, 1)))


def _write_images(group, images) -> None:
    """The ``images`` dataset; streamed batch by batch into chunks of whole images when
    ``images`` has batches (an image folder), written at once otherwise."""
    shape = tuple(images.shape)
    if shape[0] == 0:
        group.create_dataset("images", data=np.zeros(shape, dtype=np.uint8))
        return
    if not hasattr(images, "batches"):  # already in memory: one contiguous dataset, as always
        group.create_dataset("images", data=images)
        return
    chunks = (image_chunk_rows(shape), *shape[1:])
    ds = group.create_dataset("images", shape=shape, dtype=np.uint8, chunks=chunks)
    for start, batch in images.batches():
        ds[start : start + len(batch)] = batch


def read_prepared(path: str | Path, split: str) -> dict[str, np.ndarray]:
    """All arrays of one split of ``prepared.h5`` (images, labels, fine_labels, index, ...)."""
    import h5py

    if not Path(path).exists():
        raise CalexError(f"prepared file {path} is missing; run the prepare_dataset rule first")
    with h5py.File(path, "r") as f:
        if split not in f:
            raise CalexError(f"prepared file {path} has no split {split!r}; expected {SPLITS}")
        return {name: ds[()] for name, ds in f[split].items()}


def read_prepared_attrs(path: str | Path) -> dict:
    """Root attributes of ``prepared.h5`` with the JSON ones decoded."""
    import h5py

    with h5py.File(path, "r") as f:
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    for key in _JSON_ATTRS:
        if key in attrs:
            attrs[key] = json.loads(attrs[key])
    return attrs


def read_arrays(path: str | Path, split: str, keys: tuple[str, ...],
                rows: int | None = None) -> tuple[np.ndarray, ...]:  # fmt: skip
    """Named arrays of one split of ``prepared.h5`` (e.g. ``("images", "fine_labels")``);
    only the first ``rows`` rows when given (read by chunk, the rest is never decoded)."""
    import h5py

    if not Path(path).is_file():
        raise CalexError(f"prepared file {path} is missing; run the prepare_dataset rule first")
    with h5py.File(path, "r") as f:
        if split not in f:
            raise CalexError(f"{path} has no '{split}' split; rerun prepare_dataset")
        missing = [k for k in keys if k not in f[split]]
        if missing:
            raise CalexError(f"{path} split '{split}' lacks {missing}; rerun prepare_dataset")
        if rows is None:
            return tuple(f[split][k][()] for k in keys)
        return tuple(f[split][k][:rows] for k in keys)


def read_class_names(path: str | Path) -> list[str]:
    """The task's class names, the root attribute ``class_names`` of ``prepared.h5``."""
    import h5py

    if not Path(path).is_file():
        raise CalexError(f"prepared file {path} does not exist; run prepare_dataset first")
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("class_names")
    except OSError as exc:
        raise CalexError(f"{path} is not a readable HDF5 file ({exc})") from exc
    if raw is None:
        raise CalexError(f"{path} has no 'class_names' attribute; rerun prepare_dataset")
    return list(json.loads(raw.decode() if isinstance(raw, bytes) else str(raw)))
