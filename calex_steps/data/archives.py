"""Readers of the official on-disk formats: CIFAR-100 / CIFAR-10 python pickles, CINIC-10 folders.

The CIFAR batches are pickles by their publisher's choice; they are read with an
unpickler that admits only the types those files hold (docs/formats.md).

Each returns the official splits as ``{"images": uint8 N×32×32×3 (RGB, HWC),
"labels", "fine_labels", "index"}`` plus ``class_names`` and ``fine_class_names``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from calex_steps.errors import CalexError

_SIZE = 32
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),  # the official files (numpy 1)
        ("numpy._core.multiarray", "_reconstruct"),  # the same, pickled by numpy 2
        ("numpy.core.numeric", "_frombuffer"),  # arrays in pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes in protocol 2 pickles written by Python 3
    }
)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles what the CIFAR python batches hold and nothing else: dicts, lists,
    strings, bytes, numbers and numpy arrays. Any other global (a function or class a
    tampered file would call while loading) is refused before it is imported."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"it asks to load {module}.{name}, which a CIFAR batch never holds"
            )
        return super().find_class(module, name)


def _load_pickle(path: Path, keys: tuple[str, ...]) -> dict[str, object]:
    """Load one CIFAR pickle with the restricted unpickler and check it has ``keys``."""
    try:
        with open(path, "rb") as f:
            raw = _CifarUnpickler(f, encoding="bytes").load()
    except FileNotFoundError as exc:
        raise CalexError(f"dataset file {path} is missing") from exc
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as exc:
        raise CalexError(
            f"dataset file {path} is not a CIFAR python pickle ({exc}); download the "
            "official archive again and extract it"
        ) from exc
    if not isinstance(raw, dict):
        raise CalexError(f"dataset file {path} is not a CIFAR python pickle (no dict inside)")
    out = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
    missing = [k for k in keys if k not in out]
    if missing:
        raise CalexError(f"dataset file {path} lacks the entries {missing}; re-extract the archive")
    return out


def _names(values) -> list[str]:
    """Class names from a pickle, decoding bytes."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _chw_rows_to_hwc(data, path: Path) -> np.ndarray:
    """CIFAR rows N×3072 (1024 R, then G, then B, each row-major) -> uint8 N×32×32×3."""
    rows = np.asarray(data, dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] != 3 * _SIZE * _SIZE:
        raise CalexError(f"dataset file {path}: 'data' has shape {rows.shape}, expected N×3072")
    return np.ascontiguousarray(rows.reshape(-1, 3, _SIZE, _SIZE).transpose(0, 2, 3, 1))


def _official(images: np.ndarray, labels, fine_labels=None) -> dict[str, np.ndarray]:
    """One official split as arrays; ``index`` is the position in that split."""
    labels = np.asarray(labels, dtype=np.int64)
    fine = labels if fine_labels is None else np.asarray(fine_labels, dtype=np.int64)
    if not len(images) == len(labels) == len(fine):
        raise CalexError("dataset files are inconsistent: images and labels differ in length")
    return {
        "images": images,
        "labels": labels,
        "fine_labels": fine,
        "index": np.arange(len(labels), dtype=np.int64),
    }


def read_cifar100_python(root: str | Path) -> dict:
    """Read ``root/{train,test,meta}`` of the official ``cifar-100-python`` archive.

    Returns ``{"train": split, "test": split, "class_names": [...20],
    "fine_class_names": [...100]}``; each split holds ``images`` uint8
    N×32×32×3, ``labels`` (the archive's ``coarse_labels``), ``fine_labels``
    and ``index``, all in the archive's order.
    """
    root = Path(root)
    out: dict = {}
    for split in ("train", "test"):
        raw = _load_pickle(root / split, ("data", "fine_labels", "coarse_labels"))
        images = _chw_rows_to_hwc(raw["data"], root / split)
        out[split] = _official(images, raw["coarse_labels"], raw["fine_labels"])
    meta = _load_pickle(root / "meta", ("fine_label_names", "coarse_label_names"))
    out["class_names"] = _names(meta["coarse_label_names"])
    out["fine_class_names"] = _names(meta["fine_label_names"])
    return out


def read_cifar10_python(root: str | Path) -> dict:
    """Read ``root/{data_batch_1..5,test_batch,batches.meta}`` of ``cifar-10-batches-py``.

    Returns ``{"train": split, "test": split, "class_names": [...10],
    "fine_class_names": same}``; ``fine_labels`` equal ``labels``.
    """
    root = Path(root)
    parts = [_load_pickle(root / name, ("data", "labels")) for name in CIFAR10_BATCHES]
    images = np.concatenate([_chw_rows_to_hwc(p["data"], root) for p in parts])
    out: dict = {"train": _official(images, np.concatenate([p["labels"] for p in parts]))}
    test = _load_pickle(root / "test_batch", ("data", "labels"))
    out["test"] = _official(_chw_rows_to_hwc(test["data"], root / "test_batch"), test["labels"])
    names = _names(_load_pickle(root / "batches.meta", ("label_names",))["label_names"])
    out["class_names"] = out["fine_class_names"] = names
    return out


def _read_folder(folder: Path, classes: list[str]) -> dict[str, np.ndarray]:
    """Read ``folder/<class>/*.png`` in class order, files sorted by name."""
    from PIL import Image

    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((folder / name).glob("*.png")):
            with Image.open(file) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            if arr.shape != (_SIZE, _SIZE, 3):
                raise CalexError(f"image {file} is {arr.shape[1]}×{arr.shape[0]}, expected 32×32")
            images.append(arr)
            labels.append(label)
    if not images:
        raise CalexError(f"no PNG images under {folder}/<class>/")
    return _official(np.stack(images), labels)


def read_cinic10(root: str | Path) -> dict:
    """Read CINIC-10 image folders ``root/{train,valid,test}/<class>/*.png``.

    Class order is the sorted folder names of ``root/train`` (every split
    must have the same folders). Returns ``{"train", "valid", "test"}`` splits
    plus ``class_names`` and ``fine_class_names`` (equal).
    """
    root = Path(root)
    for split in ("train", "valid", "test"):
        if not (root / split).is_dir():
            raise CalexError(f"CINIC-10 folder {root / split} is missing")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    out: dict = {"class_names": classes, "fine_class_names": classes}
    for split in ("train", "valid", "test"):
        found = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
        if found != classes:
            raise CalexError(
                f"{root / split} has class folders {found}, expected {classes} as in train/"
            )
        out[split] = _read_folder(root / split, classes)
    return out
