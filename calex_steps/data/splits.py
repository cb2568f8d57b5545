"""Seeded, stratified carving of the validation (calibration) split (docs/method.md#data),
the calibration/test re-draws of the held-out pool, and the pool's bootstrap resamples."""

from __future__ import annotations

import numpy as np

from calex_steps.data.prepared import SPLITS
from calex_steps.errors import CalexError


def stratified_split(labels: np.ndarray, n_second: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample positions into two sorted, disjoint, covering index arrays.

    The second part has ``n_second`` samples; each class gets its proportional
    share rounded by largest remainder (so within one sample of exact), and the
    members of each class are a seeded random choice.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 < n_second < n:
        raise CalexError(f"val_size must be between 1 and {n - 1} (got {n_second})")
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n_second / n)
    take = np.floor(quota).astype(np.int64)
    # give the leftover samples to the classes with the largest fractional parts
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n_second - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    second = [
        rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)
    ]
    mask = np.zeros(n, dtype=bool)
    mask[np.concatenate(second)] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _subset(split: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Rows ``idx`` of every array of a split."""
    return {k: v[idx] for k, v in split.items()}


def three_splits(raw: dict, settings: dict, source: str) -> tuple[dict, str]:
    """Official splits -> train/val/test following ``val_from``; returns (splits, val_source)."""
    default = "valid" if source == "cinic10" else "train"
    val_from = settings.get("val_from", default)
    allowed = ("valid", "train", "test") if source == "cinic10" else ("train", "test")
    if val_from not in allowed:
        raise CalexError(
            f"datasets.<key>.val_from is {val_from!r}; use one of {', '.join(allowed)}"
        )
    if val_from == "valid":
        return {"train": raw["train"], "val": raw["valid"], "test": raw["test"]}, "valid"
    if "val_size" not in settings:
        raise CalexError(f"datasets.<key>.val_size is required with val_from: {val_from}")
    seed = int(settings.get("split_seed", 0))
    part = raw[val_from]
    # stratify by fine label: for CIFAR-100 this also balances the coarse classes
    keep, val = stratified_split(part["fine_labels"], int(settings["val_size"]), seed)
    splits = {"train": raw["train"], "test": raw["test"]}
    splits[val_from] = _subset(part, keep)
    splits["val"] = _subset(part, val)
    return {k: splits[k] for k in SPLITS}, val_from


def redraw_partition(
    val_labels: np.ndarray, test_labels: np.ndarray, split: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Calibration and test positions of split ``split`` in the pool [val; test].

    Split 0 is the prepared partition itself (positions 0..V-1 and V..V+T-1).
    Split k > 0 draws, from the pooled held-out samples, a stratified test part
    of the original test size (seeded by ``seed`` and ``k``); the rest is the
    calibration part. Both returned arrays are sorted positions into the pool.
    """
    n_val, n_test = len(val_labels), len(test_labels)
    if split == 0:
        return np.arange(n_val), np.arange(n_val, n_val + n_test)
    if split < 0:
        raise CalexError(f"split index must be >= 0, got {split}")
    pooled = np.concatenate([np.asarray(val_labels), np.asarray(test_labels)])
    seq = np.random.SeedSequence([int(seed), int(split)])
    return stratified_split(pooled, n_test, int(seq.generate_state(1)[0]))


POOL_STREAM = 0x706F6F6C  # "pool": keeps the resamples apart from every other stream of a seed


def pool_resamples(pool_size: int, replicates, seed: int) -> np.ndarray:
    """Bootstrap resamples of the held-out pool [val; test], by replicate number.

    Row i holds, for replicate ``replicates[i]`` (1, 2, ...), how often each pool
    position is drawn when ``pool_size`` positions are drawn with replacement. A
    replicate depends only on ``seed`` and its number, so every stage that asks for
    it gets the same one: the sweep reweights a split's calibration part with it, the
    tables the test part, and an image used by several splits keeps one weight.

    Returns:
        (len(replicates), pool_size) int32 counts.
    """
    if pool_size < 1:
        raise CalexError(f"the held-out pool must hold at least one sample, got {pool_size}")
    out = np.empty((len(replicates), pool_size), np.int32)
    for row, replicate in enumerate(replicates):
        rng = np.random.default_rng([int(seed), POOL_STREAM, int(replicate)])
        out[row] = np.bincount(rng.integers(0, pool_size, pool_size), minlength=pool_size)
    return out


def repartition(
    val: dict, test: dict, split: int, seed: int
) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """The calibration and test parts of split ``split`` (dicts of per-sample arrays, or
    lists of them per branch, and ``num_classes``, as ``cascade.sweep.sweep`` takes them).

    Split 0 returns the prepared partition unchanged; split k > 0 pools the two
    held-out parts and re-draws them (``redraw_partition``). Also
    returns both parts' positions in the pool [val; test]: the test positions pair
    the same test images across recipes and seeds, and both give every image its
    one weight in a bootstrap resample of the pool.
    """
    if split > 0 and val["labels"] is None:
        raise CalexError(
            f"split {split} re-draws the calibration and test parts from their pool, which "
            "needs the calibration labels; use study.splits: 1 with an unlabelled calibration set"
        )
    val_labels = val["labels"] if val["labels"] is not None else val["backbone_pred"]
    val_pos, test_pos = redraw_partition(val_labels, test["labels"], split, seed)
    if split == 0:
        return val, test, val_pos, test_pos
    parts = []
    for pos in (val_pos, test_pos):
        part = {"num_classes": val["num_classes"]}
        for key, value in val.items():
            if key == "num_classes":
                continue
            if isinstance(value, list):
                pooled = [np.concatenate([a, b]) for a, b in zip(value, test[key], strict=True)]
                part[key] = [p[pos] for p in pooled]
            else:
                part[key] = np.concatenate([value, test[key]])[pos]
        parts.append(part)
    return parts[0], parts[1], val_pos, test_pos
