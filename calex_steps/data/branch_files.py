"""Branch output files ``branch{l}.npz`` (and ZTW's ``ztw_ensemble{l}.npz``): writing and reading.

Per split ``{split}_pred`` (int64 N), ``{split}_conf`` (float32 N),
``{split}_logits`` and ``{split}_confs`` (float32 N×C), and ``meta``: a JSON
string naming the recipe, seed, branch, feature cache and head MACs. Every
stage after training reads these files, never the heads (docs/method.md#training).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from calex_steps.errors import CalexError
from calex_steps.io import atomic_path


def branch_files_bytes(samples: int, num_classes: int, head_values: int) -> int:
    """About the bytes one branch's files take: ``branch{l}.npz`` (per sample an int64
    prediction, a float32 confidence, float32 logits and confidences), ``branch{l}.pt``
    and its scratch file (the head's float32 values; Adam's two moments in the scratch),
    and a few kilobytes of archive structure for each."""
    return samples * (8 + 4 + 8 * num_classes) + 16 * head_values + 3 * 16384


def write_branch_outputs(path: str | os.PathLike, outputs: dict[str, dict], meta: dict) -> None:
    """Write ``{split}_{key}`` arrays plus the JSON ``meta`` string to an .npz, atomically."""
    arrays = {f"{sp}_{key}": value for sp, d in outputs.items() for key, value in d.items()}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)


def load_prev_outputs(
    paths: list[str | os.PathLike], recipe: str, seed: int, features_id: str, branch: int
) -> dict[int, dict]:
    """Earlier branches' output files by branch number, checked against this run.

    Each file's ``meta`` must name the same recipe, seed and feature cache, and
    a branch number below ``branch``; anything else is a wiring error.
    """
    prev = {}
    for path in paths:
        if not Path(path).is_file():
            raise CalexError(f"earlier branch output '{path}' does not exist")
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
        if "meta" not in arrays:
            raise CalexError(f"'{path}' has no 'meta' entry; it is not a branch output file")
        meta = json.loads(str(arrays.pop("meta")))
        for key, want in (("recipe", recipe), ("seed", seed), ("features_id", features_id)):
            if meta.get(key) != want:
                raise CalexError(
                    f"earlier branch output '{path}' has {key} {meta.get(key)!r}, expected "
                    f"{want!r}; pass the outputs of the same recipe, seed and feature cache"
                )
        if not 1 <= int(meta.get("branch", 0)) < branch:
            raise CalexError(
                f"'{path}' holds branch {meta.get('branch')}, not an earlier branch of {branch}"
            )
        prev[int(meta["branch"])] = arrays | {"path": str(path)}
    return prev


def load_branch(path: Path, features_id: str) -> tuple[dict, dict]:
    """Read one branch file's val/test exit signals and its ``meta``; check it matches the cache."""
    if not path.is_file():
        raise CalexError(f"branch file {path} does not exist; run train_branch first")
    with np.load(path, allow_pickle=False) as data:
        needed = ["meta", "val_pred", "val_conf", "test_pred", "test_conf"]
        missing = [k for k in needed if k not in data.files]
        if missing:
            raise CalexError(f"branch file {path} lacks {missing}; rerun train_branch")
        meta = json.loads(data["meta"].item())
        arrays = {k: data[k] for k in needed[1:]}
    for key in ("recipe", "seed", "features_id", "head_macs"):
        if key not in meta:
            raise CalexError(f"branch file {path} has no '{key}' in its meta; rerun train_branch")
    if meta["features_id"] != features_id:
        raise CalexError(
            f"branch file {path} was trained on features '{meta['features_id']}', not on the "
            f"current cache '{features_id}'; rerun train_branch"
        )
    return arrays, meta


def load_branches(paths: Sequence[Path], features_id: str) -> list[tuple[dict, dict]]:
    """Load the branch files in cascade order; all must share one recipe and seed."""
    loaded = []
    for number, path in enumerate(map(Path, paths), start=1):
        arrays, meta = load_branch(path, features_id)
        first = loaded[0][1] if loaded else meta
        for key in ("recipe", "seed"):
            if meta[key] != first[key]:
                raise CalexError(
                    f"branch file {path} has {key} {meta[key]!r} but branch 1 has {first[key]!r}; "
                    "pass the branch files of one recipe and seed"
                )
        if "branch" in meta and int(meta["branch"]) != number:
            raise CalexError(f"branch file {path} is branch {meta['branch']}, passed as {number}")
        loaded.append((arrays, meta))
    return loaded


def branch_meta(
    recipe: str,
    seed: int,
    branch: int,
    features_id: str,
    head_macs: int,
    settings: dict,
    attach_point: str,
) -> dict:
    """The ``meta`` a trained branch records in its head and output files."""
    return {
        "recipe": recipe,
        "seed": seed,
        "branch": branch,
        "features_id": features_id,
        "head_macs": head_macs,
        "settings": settings,
        "attach_point": attach_point,
    }


def exit_points(metas: Sequence[dict], cache_points: Sequence[str], where) -> list[str]:
    """The attach point of every branch, in cascade order, from the branch files' metas (a
    file written before metas named it sits at the cache's point of its number)."""
    points = []
    for number, meta in enumerate(metas, start=1):
        point = meta.get("attach_point")
        if point is None:
            if len(metas) != len(cache_points):
                raise CalexError(
                    f"got {len(metas)} branch files that do not name their attach points but "
                    f"{where} has attach points {list(cache_points)}; pass one --branches file "
                    "per attach point, or retrain the branches"
                )
            point = cache_points[number - 1]
        if point not in cache_points:
            raise CalexError(
                f"{where}: branch {number} sits at '{point}', which the feature cache does not "
                f"hold ({list(cache_points)}); rerun cache_features and the training"
            )
        points.append(point)
    return points


def read_branch_logits(
    paths: Sequence[str | os.PathLike], recipe: str, seed: int, features_id: str, splits
) -> tuple[dict[str, list[np.ndarray]], list[dict]]:
    """Branch files in cascade order -> per split a list of (N, C) float32 logits, and the metas.

    Each file must be branch number = its position, of ``recipe``, ``seed`` and the
    cache ``features_id``.
    """
    members = {sp: [] for sp in splits}
    metas = []
    for number, path in enumerate(paths, start=1):
        if not Path(path).is_file():
            raise CalexError(f"branch output '{path}' does not exist; run train_branch first")
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("meta", *(f"{sp}_logits" for sp in splits)) if k not in z.files]
            if missing:
                raise CalexError(f"'{path}' lacks {missing}; it is not a branch output file")
            meta = json.loads(str(z["meta"]))
            for sp in splits:
                members[sp].append(z[f"{sp}_logits"].astype(np.float32))
        want = {"recipe": recipe, "seed": seed, "features_id": features_id, "branch": number}
        for key, value in want.items():
            if meta.get(key) != value:
                raise CalexError(
                    f"'{path}' has {key} {meta.get(key)!r}, expected {value!r}; pass the "
                    "branch files of one recipe, seed and feature cache, in branch order"
                )
        metas.append(meta)
    return members, metas
