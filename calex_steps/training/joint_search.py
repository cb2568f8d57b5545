"""The per-baseline hyper-parameter search of the joint recipes (docs/baselines.md).

A joint recipe may carry ``search: {key: [values], ...}`` (PTEEnet:
``pteenet_lambda`` and ``lr``; BoostNet: ``boost_r`` and ``lr``). Every point of
the grid trains the recipe in full on the train split; each is scored on the
calibration split alone (``cascade.selection.calibration_score``: thresholds on
one half, cascade on the other, mean loss over FR 0 to 0.8), and the lowest
score wins (ties: the earlier grid point). The test split is never opened.
``apply_search`` then hands the chosen values to ``train_joint``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os

import torch

from calex_steps.cascade.selection import calibration_score
from calex_steps.cascade.simulate import cascade_cost
from calex_steps.cascade.sweep import ExitCosts
from calex_steps.data.feature_cache import cache_id, features_meta
from calex_steps.errors import CalexError
from calex_steps.training.joint import (
    DEFAULT_MEMORY_MB,
    build_joint,
    exit_cost_fractions,
    fit_joint,
    joint_outputs,
    open_joint_splits,
    parse_joint_settings,
)

SEARCHABLE = {"pteenet": ("pteenet_lambda", "lr"), "boostnet": ("boost_r", "lr")}
"""The keys a joint target's search may vary: the ones that decide its frontier."""

SEARCH_SPLITS = ("train", "val")
"""The only parts of the feature cache the search reads."""


def search_grid(settings: dict) -> list[dict]:
    """Every grid point of ``settings['search']`` as full settings (without ``search``),
    in the order the lists give (first key slowest)."""
    search = settings.get("search")
    if not search:
        raise CalexError("the recipe has no 'search' lists; add search: {key: [values]}")
    allowed = SEARCHABLE.get(settings.get("target"), ())
    bad = sorted(set(search) - set(allowed))
    if bad:
        raise CalexError(
            f"search key(s) {bad} cannot vary for target {settings.get('target')}; "
            f"use {list(allowed)}"
        )
    for key, values in search.items():
        if not values or any(not isinstance(v, (int, float)) or v < 0 for v in values):
            raise CalexError(f"search.{key} must be a non-empty list of numbers >= 0")
    base = {k: v for k, v in settings.items() if k != "search"}
    keys = list(search)
    points = itertools.product(*search.values())
    return [base | dict(zip(keys, point, strict=True)) for point in points]


def apply_search(settings: dict, record: dict | None) -> dict:
    """The settings ``train_joint`` trains: without ``search``, as they are; with it, the
    grid point ``record`` (a search.json) chose, after checking the record is this grid's."""
    if "search" not in settings:
        if record is not None:
            raise CalexError("got a search result for a recipe without 'search'; drop --search")
        return settings
    if record is None:
        raise CalexError("the recipe has 'search' lists; pass its search.json (--search)")
    if record.get("search") != settings["search"]:
        raise CalexError(
            f"the search result was made for grid {record.get('search')}, not "
            f"{settings['search']}; rerun search_baseline"
        )
    chosen = {k: record["chosen"][k] for k in settings["search"]}
    return {k: v for k, v in settings.items() if k != "search"} | chosen


def _search_splits(data: dict) -> tuple[dict, dict]:
    """The train split as joint training reads it, and the calibration (val) split as the
    scoring reads it: ``xs``, ``labels`` (None when unknown), ``backbone_pred``."""
    first = data["val"]
    labels = first["labels"]
    val = {
        "xs": first["xs"],
        "labels": None if labels.size and labels.min() < 0 else labels,
        "backbone_pred": first["y"].numpy(),
        "num_classes": int(first["teacher"].shape[1]),
    }
    return data["train"], val


def run_search(
    features_path: str | os.PathLike,
    settings: dict,
    seed: int,
    device: torch.device,
    scratch_at: str | os.PathLike,
    log: logging.Logger,
    memory_mb: float = DEFAULT_MEMORY_MB,
    exits: list[str] | None = None,
) -> dict:
    """Train and score every grid point; return the search record (search.json).
    ``exits``: the recipe's attach points (default every point of the cache).

    The record holds ``search`` (the grid as configured), ``chosen`` (the winning
    values), ``candidates`` (per grid point: its values and its calibration
    scores), ``seed``, ``features_id``, ``criterion`` and ``splits_read``.
    """
    grid = search_grid(settings)
    meta = features_meta(features_path)
    exits = list(exits or meta.get("attach_points", []))
    exit_cost_fractions(meta, features_path, exits)  # one-line errors for a bad cache
    with contextlib.ExitStack() as stack:  # the cache is read in batches (chunked)
        data, infos = open_joint_splits(features_path, exits, stack, memory_mb, SEARCH_SPLITS,
                                        settings["head"])  # fmt: skip
        return _search(*_search_splits(data), infos, settings, grid, meta, features_path,
                       seed, device, scratch_at, log, exits)  # fmt: skip


def _search(train, val, infos, settings, grid, meta, features_path, seed, device, scratch_at,
            log, exits) -> dict:  # fmt: skip
    """Train and score every grid point on the open cache (``run_search``)."""
    stage_cum = [int(meta["stage_macs"][a]) for a in exits]
    total = int(meta["stage_macs"]["total"])
    candidates = []
    for point in grid:
        cfg = parse_joint_settings(point)
        values = {k: point[k] for k in settings["search"]}
        model, costs, configs, macs = build_joint(
            infos, val["num_classes"], cfg, seed, meta, features_path, exits
        )
        fingerprint = {"search": values, "seed": seed, "settings": dataclasses.asdict(cfg)}
        fingerprint |= {"features_id": cache_id(features_path), "head_configs": configs}
        model = model.to(device)
        fit_joint(model, train, cfg, costs, seed, fingerprint, scratch_at, log)
        r = cfg.boost_r if cfg.target == "boostnet" else None
        outs = joint_outputs(model, val, r, cfg.batch_size)
        split = val | {"confs": [o["conf"] for o in outs], "preds": [o["pred"] for o in outs]}
        exit_costs = ExitCosts(macs=cascade_cost(stage_cum, macs, total), total_macs=total)
        score = calibration_score(split, exit_costs, seed)
        log.info("search %s: calibration score %s", values, score)
        candidates.append({"values": values, **score})
    best = min(range(len(candidates)), key=lambda i: (candidates[i]["loss_area"], i))
    log.info("search chose %s", candidates[best]["values"])
    return {
        "search": settings["search"],
        "chosen": candidates[best]["values"],
        "candidates": candidates,
        "seed": seed,
        "features_id": cache_id(features_path),
        "criterion": "lowest mean accuracy loss over FR 0-0.8 on half the calibration split, "
        "CPM thresholds set on the other half",
        "splits_read": list(SEARCH_SPLITS),
    }
