"""Read the feature cache (``features.h5``) and convert maps to packed Gram matrices.

``pack_gram`` is the one definition of the packed Gram form: the cache writer
stores it and the prototype head reads it, so both must agree on the order
(``numpy.triu_indices(d)``, row-major upper triangle) and on the scale (mean
over positions, not sum).
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import torch

from calex_steps.io import CalexError, open_h5, sha256_file

FEATURE_KINDS = ("gram", "map")


def packed_size(d: int) -> int:
    """Number of entries of the packed upper triangle of a d×d matrix: d(d+1)/2."""
    return d * (d + 1) // 2


def pack_gram(maps: torch.Tensor) -> torch.Tensor:
    """Packed Gram matrices of feature maps.

    Args:
        maps: N×d×H×W feature maps (any float dtype, any device).

    Returns:
        N×d(d+1)/2 tensor, same dtype and device: the upper triangle, in
        ``numpy.triu_indices(d)`` order, of G = mean over the H·W positions of x xᵀ.
    """
    n, d, h, w = maps.shape
    x = maps.reshape(n, d, h * w)  # N×d×P
    gram = torch.bmm(x, x.transpose(1, 2)) / (h * w)  # N×d×d, mean over positions
    rows, cols = torch.triu_indices(d, d, device=maps.device)
    return gram[:, rows, cols]


def unpack_gram(packed: torch.Tensor, d: int) -> torch.Tensor:
    """Inverse of :func:`pack_gram`: N×d(d+1)/2 packed entries -> N×d×d symmetric G."""
    if packed.ndim != 2 or packed.shape[1] != packed_size(d):
        raise CalexError(
            f"packed Gram has shape {tuple(packed.shape)}, expected N×{packed_size(d)} for d={d}"
        )
    rows, cols = torch.triu_indices(d, d, device=packed.device)
    gram = packed.new_zeros(packed.shape[0], d, d)
    gram[:, rows, cols] = packed
    gram[:, cols, rows] = packed  # mirror; the diagonal is written twice with equal values
    return gram


def _attr_value(value):
    """An HDF5 attribute as a plain Python value; JSON containers are decoded."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):
        # Only JSON objects/lists are decoded: a hash made of digits stays a string.
        if value[:1] in ("[", "{"):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _open(path: str | os.PathLike) -> h5py.File:
    """Open a feature cache read-only, with a clear error when it is missing or unreadable."""
    return open_h5(path, "cache_features")


def features_meta(path: str | os.PathLike) -> dict:
    """Root attributes of a feature cache as a dict (JSON lists/objects decoded)."""
    with _open(path) as f:
        return {key: _attr_value(value) for key, value in f.attrs.items()}


def _read_split(f: h5py.File, path, branch: int, split: str) -> dict:
    """One split's arrays for attach point ``branch`` (1-based)."""
    if split not in f:
        raise CalexError(f"feature cache '{path}' has no split group '{split}'")
    group = f[split]
    name = f"feat{branch}"
    for key in (name, "labels", "logits"):
        if key not in group:
            raise CalexError(
                f"feature cache '{path}' has no dataset '{split}/{key}'; "
                "check the branch number against the backbone's attach_points"
            )
    ds = group[name]
    kind = _attr_value(ds.attrs.get("kind", ""))
    if kind not in FEATURE_KINDS:
        raise CalexError(f"'{path}' {split}/{name} has kind '{kind}', expected gram or map")
    d, h, w = (int(ds.attrs[k]) for k in ("d", "h", "w"))
    x = np.asarray(ds[...], dtype=np.float32)
    expected = (packed_size(d),) if kind == "gram" else (d, h, w)
    if x.shape[1:] != expected:
        raise CalexError(
            f"'{path}' {split}/{name} has shape {x.shape}, expected N×{expected} for kind {kind}"
        )
    labels = np.asarray(group["labels"][...], dtype=np.int64)
    logits = np.asarray(group["logits"][...], dtype=np.float32)
    if not (len(labels) == len(logits) == len(x)):
        raise CalexError(f"'{path}' split '{split}': feat, labels and logits differ in length")
    return {"x": x, "kind": kind, "d": d, "h": h, "w": w, "labels": labels, "logits": logits}


def load_branch_inputs(
    path: str | os.PathLike, branch: int, splits: tuple[str, ...] | list[str]
) -> dict[str, dict]:
    """Load one attach point's cached inputs for the given splits into RAM.

    Args:
        path: the ``features.h5`` file.
        branch: 1-based attach point number (dataset ``feat{branch}``).
        splits: split group names, e.g. ``("train", "val", "test")``.

    Returns:
        ``{split: {"x": float32 N×P or N×d×H×W, "kind": "gram"|"map", "d", "h", "w",
        "labels": int64 N, "logits": float32 N×C}}``.
    """
    with _open(path) as f:
        return {split: _read_split(f, path, branch, split) for split in splits}


def check_provenance(features_path: str | os.PathLike, backbone_path: str | os.PathLike) -> None:
    """Stop when a feature cache was not written from this backbone checkpoint."""
    recorded = features_meta(features_path).get("backbone_sha256")
    actual = sha256_file(backbone_path)
    if recorded != actual:
        raise CalexError(
            f"feature cache '{features_path}' was written from another backbone checkpoint "
            f"(recorded sha256 {str(recorded)[:12]}, '{backbone_path}' has {actual[:12]}); "
            f"delete it and rerun the cache_features rule"
        )
