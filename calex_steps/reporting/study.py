"""Every table of one dataset from its sweep outputs: the estimates with intervals, the
paired differences, the iso-accuracy and LR views, the paper-grid comparison, the
ranking, and the bootstrap replicates the claims are checked on."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from calex_steps.errors import CalexError
from calex_steps.reporting import ranking, runfiles, tables
from calex_steps.reporting.bootstrap import Design, bootstrap_backbone
from calex_steps.reporting.curves import STATUS_NAMES
from calex_steps.reporting.tables import NOT_MEASURED

UNRECORDED = "an unrecorded device (no segments.json was given)"

DEFAULTS = {
    "reference": "noalign",
    "fr_targets": list(tables.FR_TARGETS),
    "lr_targets": [0.2, 0.3, 0.4, 0.5, 0.6],
    "iso_losses": [0.5, 1.0],
    "tolerance": 0.08,
    "confidence": 0.95,
    "best_probability": 0.95,
    "resamples": 2000,
    "calibration_resamples": 10,
    "bootstrap_seed": 0,
    "lr_batch_size": None,
}


def check_settings(settings: dict) -> dict:
    """Fill the defaults of the optional keys; reject unknown or missing ones."""
    known = {"backbones", "recipes", *DEFAULTS}
    unknown = sorted(set(settings) - known)
    if unknown or not {"backbones", "recipes"} <= set(settings):
        raise CalexError(
            f"--settings takes the keys {sorted(known)} (backbones and recipes required); "
            f"got {sorted(settings)}"
        )
    return {**DEFAULTS, **settings}


def design(settings: dict) -> Design:
    """The bootstrap design of checked settings."""
    return Design(
        tuple(settings["fr_targets"]), tuple(settings["lr_targets"]),
        tuple(settings["iso_losses"]), float(settings["tolerance"]),
        int(settings["resamples"]), int(settings["bootstrap_seed"]),
    )  # fmt: skip


def run_key(path: str | Path) -> tuple:
    """(backbone, recipe, seed, split) of a split folder's file."""
    info = runfiles.parse_run_path(path)
    return info["backbone"], info["recipe"], info["seed"], info["split"]


def _runs(part: pd.DataFrame, exits: Mapping[tuple, Path], recipes) -> tuple[dict, list, list]:
    """Each run's exits file and frontier accuracies (margin order), and the seed/split grid."""
    seeds, splits = runfiles.run_grid(part, recipes)
    part = part[part["recipe"].isin(recipes)]
    runs = {}
    for (recipe, seed, split), rows in part.groupby(["recipe", "seed", "split"]):
        key = (rows["backbone"].iloc[0], recipe, seed, split)
        if key not in exits:
            raise CalexError(f"no exits.npz was given for {'/'.join(map(str, key))}")
        rows = rows.sort_values("margin")
        runs[(recipe, seed, split)] = (exits[key], rows["margin"].to_numpy(), rows["accuracy"])
    return runs, seeds, splits


def _basis(settings: dict, seeds, splits) -> str:
    """What the intervals cover, in words."""
    return (
        f"{settings['confidence']:.0%} bootstrap intervals over the held-out pool's images "
        f"(one weight per image, shared by the {len(splits)} split"
        f"{'s' * (len(splits) > 1)}), the calibration "
        f"({settings['calibration_resamples']} recalibrated resamples) and "
        f"{len(seeds)} seed{'s' * (len(seeds) > 1)} ({settings['resamples']} resamples)"
    )


def tabulate(
    frontier: pd.DataFrame,
    sweeps: pd.DataFrame,
    exits: Mapping[tuple, Path],
    settings: dict,
    conditions: Mapping[str, str],
) -> dict:
    """All tables of one dataset.

    Args:
        frontier, sweeps: ``runfiles.read_tables`` of ``frontier.csv`` / ``sweep.csv``.
        exits: ``run_key`` -> path of each run's ``exits.npz``.
        settings: checked settings (``check_settings``).
        conditions: backbone -> what its latency was measured on (absent: not known).

    Returns:
        ``loss_fr``, ``iso_fr``, ``loss_lr``, ``paper_grid``, ``ranking`` (frames),
        ``arrays`` (the replicates ``claims`` reads, stacked over backbones),
        ``bases`` (backbone -> what its intervals cover) and ``conditions``
        (backbone -> what its latency was measured on, or "not measured").
    """
    recipes, plan = settings["recipes"], design(settings)
    dataset = frontier["dataset"].iloc[0]
    lacking = [b for b in settings["backbones"] if b not in set(frontier["backbone"])]
    if lacking:
        raise CalexError(f"no frontier.csv of backbone {lacking[0]} was given; pass every run's")
    tight = float(sweeps["margin"].min())  # the paper grid's tightest margin
    longs: dict[str, list] = {"loss_fr": [], "iso_fr": [], "loss_lr": []}
    rows, stacks, bases, timed_on = [], {}, {}, {}
    for backbone in settings["backbones"]:
        runs, seeds, splits = _runs(frontier[frontier["backbone"] == backbone], exits, recipes)
        est = bootstrap_backbone(runs, recipes, seeds, splits, plan, backbone, tight,
                                 int(settings["calibration_resamples"]))  # fmt: skip
        bases[backbone] = _basis(settings, seeds, splits)
        timed_on[backbone] = (
            conditions.get(backbone, UNRECORDED) if "loss_lr" in est else NOT_MEASURED
        )
        context = {"dataset": dataset, "backbone": backbone, "basis": bases[backbone]}
        for view, frames in longs.items():
            frame, ranked = _view(est, view, recipes, settings, context, timed_on[backbone])
            frames.append(frame)
            rows += ranked
        for view in ("loss_fr", "tight"):
            for field in ("targets", "point", "reps", "status"):
                stacks.setdefault(f"{view}_{field}", []).append(getattr(est[view], field))
    out = {view: pd.concat(frames, ignore_index=True) for view, frames in longs.items()}
    out["paper_grid"] = tables.paper_grid(sweeps, out["loss_fr"], plan.fr_targets, plan.tolerance)
    out["ranking"] = ranking.ranking_frame(rows)
    arrays = {key: np.stack(values) for key, values in stacks.items()}
    arrays.update(dataset=np.array(dataset), backbones=np.array(settings["backbones"]),
                  recipes=np.array(recipes), tight_margin=tight,
                  status_names=np.array(STATUS_NAMES))  # fmt: skip
    out.update(arrays=arrays, bases=bases, conditions=timed_on)
    return out


def _view(est: dict, view: str, recipes, settings: dict, context: dict, timed_on: str):
    """(long table, ranking rows) of one view of one backbone; a view without data (LR
    never measured) says so in every cell and in its one ranking row."""
    where = {k: context[k] for k in ("dataset", "backbone")}
    if view not in est:
        frame = _unmeasured(where, recipes, settings["lr_targets"])
        return frame, [ranking.not_measured({**context, "condition": NOT_MEASURED})]
    name = settings["reference"]
    reference = recipes.index(name) if name in recipes else None
    confidence = settings["confidence"]
    frame = tables.long_table(est[view], reference, where, recipes, view, confidence)
    condition = timed_on if view == "loss_lr" else ""
    level = float(settings["best_probability"])
    return frame, ranking.rank(
        est[view], recipes, view, confidence, level, {**context, "condition": condition}
    )


def _unmeasured(where: dict, recipes, targets) -> pd.DataFrame:
    """The LR table of a backbone whose latency was not measured: every cell says so."""
    rows = [{**where, "recipe": r, "lr_target": float(t), "status": NOT_MEASURED}
            for r in recipes for t in targets]  # fmt: skip
    return pd.DataFrame(rows)
