"""The feature cache ``features.h5`` (docs/formats.md): what it stores, reading it.

Per split and attach point the cache holds the packed Gram matrix or the raw
map, whichever is smaller (``use_gram``; the packed form is defined once, in
``calex_steps.models.gram``), plus the classifier's logits, labels and
indices. Root attributes record what produced it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np

from calex_steps.data.cache_rows import CacheRows
from calex_steps.data.files import sha256_file
from calex_steps.errors import CalexError
from calex_steps.io import open_h5

FEATURE_KINDS = ("gram", "map", "pooled")
SPLITS = ("train", "val", "test")

HEAD_FORMS = {
    "basic": "proto",
    "augmented": "proto",
    "sdn": "pooled",
    "pteenet_conv2": "map",
    "msdnet": "map",
    "ztw_cascading": "map",
}
"""What the cache stores at an attach point for each head kind (docs/formats.md): ``proto``
= the packed Gram or the raw map, whichever is smaller (the prototype heads read M through
either); ``pooled`` = max- and average-pooled maps (N×2×C×s×s, SDN's pooling); ``map`` = the
raw map (convolutional heads)."""

FORMS = ("proto", "pooled", "map")


def form_dataset(f_or_group, point: int, form: str) -> str:
    """The name of the dataset holding ``form`` at attach point ``point`` (1-based) in a split
    group: ``feat{j}`` (proto, and map when the proto form is already the map), ``pool{j}``,
    ``map{j}``."""
    if form == "proto":
        return f"feat{point}"
    if form == "pooled":
        return f"pool{point}"
    if form != "map":
        raise CalexError(f"cache form '{form}' is not one of {FORMS}")
    proto = f_or_group.get(f"feat{point}") if f_or_group is not None else None
    if proto is not None and _attr_value(proto.attrs.get("kind", "")) == "map":
        return f"feat{point}"
    return f"map{point}"


def packed_size(d: int) -> int:
    """Number of entries of the packed upper triangle of a d×d matrix: d(d+1)/2."""
    return d * (d + 1) // 2


def use_gram(d: int, h: int, w: int) -> bool:
    """Store the packed Gram matrix when it is smaller than the raw map."""
    return packed_size(d) < d * h * w


def features_id(backbone_sha: str, classifier_sha: str, attach: list[str], data_attrs: dict) -> str:
    """A stable identifier of what produced a cache; branch outputs record it."""
    blob = json.dumps([backbone_sha, classifier_sha, attach, data_attrs], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


def expected_shape(kind: str, attrs) -> tuple[int, ...]:
    """The per-sample shape of a feature dataset of ``kind`` from its d, h, w attributes."""
    d, h, w = (int(attrs[k]) for k in ("d", "h", "w"))
    if kind == "gram":
        return (packed_size(d),)
    if kind == "pooled":
        return (2, d, min(4, h), min(4, w))
    return (d, h, w)


def _split_entry(f: h5py.File, path, branch: int, split: str, form: str = "proto") -> dict:
    """One split's checked description of ``form`` at attach point ``branch`` (1-based in
    the cache's attach points): the feature dataset itself (unread), its kind and d, h, w,
    and the labels and logits it holds."""
    if split not in f:
        raise CalexError(f"feature cache '{path}' has no split group '{split}'")
    group = f[split]
    name = form_dataset(group, branch, form)
    for key in (name, "labels", "logits"):
        if key not in group:
            raise CalexError(
                f"feature cache '{path}' has no dataset '{split}/{key}'; it was written for "
                "other heads or attach points: rerun cache_features for this study"
            )
    ds = group[name]
    kind = _attr_value(ds.attrs.get("kind", ""))
    if kind not in FEATURE_KINDS:
        raise CalexError(f"'{path}' {split}/{name} has kind '{kind}', expected {FEATURE_KINDS}")
    d, h, w = (int(ds.attrs[k]) for k in ("d", "h", "w"))
    expected = expected_shape(kind, ds.attrs)
    if ds.shape[1:] != expected:
        raise CalexError(
            f"'{path}' {split}/{name} has shape {ds.shape}, expected N×{expected} for kind {kind}"
        )
    labels = np.asarray(group["labels"][...], dtype=np.int64)
    logits = np.asarray(group["logits"][...], dtype=np.float32)
    if not (len(labels) == len(logits) == len(ds)):
        raise CalexError(f"'{path}' split '{split}': feat, labels and logits differ in length")
    return {"x": ds, "kind": kind, "d": d, "h": h, "w": w, "labels": labels, "logits": logits}


def load_branch_inputs(
    path: str | os.PathLike,
    branch: int,
    splits: tuple[str, ...] | list[str],
    form: str = "proto",
) -> dict[str, dict]:
    """Load one attach point's cached inputs for the given splits into RAM.

    Training stages use :class:`BranchInputs`, which keeps memory bounded by the batch.

    Args:
        path: the ``features.h5`` file.
        branch: 1-based number of the attach point in the cache's ``attach_points``.
        splits: split group names, e.g. ``("train", "val", "test")``.
        form: which stored form (``HEAD_FORMS``): proto, pooled or map.

    Returns:
        ``{split: {"x": float32 N×P, N×d×H×W or N×2×d×s×s, "kind": "gram"|"map"|"pooled",
        "d", "h", "w", "labels": int64 N, "logits": float32 N×C}}``.
    """
    with BranchInputs(path, branch, splits, memory_mb=float("inf"), form=form) as inputs:
        return {sp: entry | {"x": entry["x"][:]} for sp, entry in inputs.splits.items()}


class BranchInputs:
    """One attach point's cached inputs, open for reading in batches (a context manager).

    ``inputs.splits[split]`` has the keys of :func:`load_branch_inputs`, but ``x`` is a
    :class:`calex_steps.data.cache_rows.CacheRows`: index it with a LongTensor or a slice
    to get float32 rows. The train split is held in RAM when its float32 size is at most
    ``memory_mb``; every other read goes to the file, one batch at a time.
    """

    def __init__(self, path, branch: int, splits, memory_mb: float, form: str = "proto") -> None:
        self._file = _open(path)
        try:
            self.splits = {}
            for split in splits:
                entry = _split_entry(self._file, path, branch, split, form)
                budget = memory_mb if split == "train" else 0.0
                self.splits[split] = entry | {"x": CacheRows(path, entry["x"], budget)}
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for entry in getattr(self, "splits", {}).values():
            entry["x"].close()
        self._file.close()

    def __enter__(self) -> BranchInputs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


def argmax_rows(ds: h5py.Dataset, block: int = 65536) -> np.ndarray:
    """Row-wise argmax (int64 N) of an N×C logits dataset, read one block of rows at a time."""
    out = np.empty(len(ds), dtype=np.int64)
    for start in range(0, len(ds), block):
        out[start : start + block] = ds[start : start + block].argmax(axis=1)
    return out


def _attr_text(attrs, key: str, path: Path) -> str:
    """A string root attribute of an HDF5 file, decoded; CalexError if absent."""
    if key not in attrs:
        raise CalexError(f"{path} has no root attribute '{key}'; rerun cache_features")
    value = attrs[key]
    return value.decode() if isinstance(value, bytes) else str(value)


def read_sweep_inputs(path: Path) -> tuple[dict, dict]:
    """Read labels, backbone predictions and cost attributes from ``features.h5``.

    The calibration (``val``) labels may be absent, or negative (unknown): a sweep whose
    exit rule reads no labels (calibration target ``agree``) runs without them.

    Returns:
        splits: ``val``/``test`` -> {``labels`` (N,) or None for unlabelled ``val``,
            ``backbone_pred`` (N,)}.
        info: ``features_id``, ``stage_macs`` (dict), ``attach_points`` (list), ``num_classes``.
    """
    with open_h5(path, "cache_features") as f:
        info = {
            "features_id": _attr_text(f.attrs, "features_id", path),
            "stage_macs": json.loads(_attr_text(f.attrs, "stage_macs", path)),
            "attach_points": json.loads(_attr_text(f.attrs, "attach_points", path)),
        }
        splits = {}
        for name in ("val", "test"):
            if name not in f or "logits" not in f[name]:
                raise CalexError(f"{path} lacks {name}/logits; rerun cache_features")
            logits = f[name]["logits"]  # (N, C), read in blocks
            labels = f[name]["labels"][...].astype(np.int64) if "labels" in f[name] else None
            if labels is not None and labels.size and labels.min() < 0:
                labels = None  # unknown labels, e.g. an unlabelled calibration set
            if labels is None and name == "test":
                raise CalexError(f"{path} lacks test/labels; the test split needs its labels")
            splits[name] = {
                "labels": labels,
                "backbone_pred": argmax_rows(logits),
            }
        info["num_classes"] = int(logits.shape[1])
    return splits, info


def cache_id(path: str | os.PathLike) -> str:
    """The cache's ``features_id`` attribute (its file hash for a cache written without one);
    branch outputs record it, and every later reader checks it."""
    root = features_meta(path)
    return str(root["features_id"]) if "features_id" in root else sha256_file(path)


def read_train_targets(path: str | os.PathLike, labels: bool = False) -> tuple[np.ndarray, str]:
    """y* = argmax of the backbone's train logits (int64 N), or with ``labels`` the true train
    labels, and the cache's ``features_id``."""
    with _open(path) as f:
        if "features_id" not in f.attrs or "train" not in f or "logits" not in f["train"]:
            raise CalexError(f"'{path}' lacks features_id or train/logits; rerun cache_features")
        fid = f.attrs["features_id"]
        if labels:
            y_star = np.asarray(f["train"]["labels"][...], dtype=np.int64)
            if y_star.size and y_star.min() < 0:
                raise CalexError(f"'{path}' has no train labels; target labels needs them")
        else:
            y_star = argmax_rows(f["train"]["logits"])
    fid = fid.decode() if isinstance(fid, bytes) else str(fid)
    return y_star, fid


def feature_kinds(features: str | os.PathLike, points: list[int], forms: list[str]) -> list[str]:
    """How the cache stored ``forms[i]`` at attach point ``points[i]`` (1-based):
    ``gram``, ``map`` or ``pooled``, from the test split."""
    with h5py.File(features, "r") as f:
        return [
            _attr_value(f["test"][form_dataset(f["test"], p, form)].attrs.get("kind", ""))
            for p, form in zip(points, forms, strict=True)
        ]


def attach_index(meta: dict, point: str, path) -> int:
    """The 1-based number of attach point ``point`` in a cache's ``attach_points``."""
    points = list(meta.get("attach_points", []))
    if point not in points:
        raise CalexError(
            f"feature cache '{path}' holds attach points {points}, not '{point}'; "
            "rerun cache_features for this study's exits"
        )
    return points.index(point) + 1
