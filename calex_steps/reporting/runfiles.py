"""Reading the sweep outputs the reports are made from (docs/formats.md, section Sweep).

Each calibration/test split of a run has a folder
``results/{d}/{b}/{recipe}/seed{s}/split{k}/`` holding ``frontier.csv`` (the
dense margin grid joined with the paper's), ``sweep.csv`` (the paper's margins)
and ``exits.npz`` (every test image's exit and prediction at every frontier
margin). Files written before the dense frontier existed are refused with
one line saying to rerun the sweep. numpy and pandas only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from calex_steps.errors import CalexError

RUN_KEYS = ("dataset", "backbone", "recipe", "seed", "split")
TABLE_COLUMNS = ("margin", "accuracy", "fr", "lr", "backbone_accuracy")
EXITS_KEYS = (
    "margins",
    "exit_branch",
    "final_pred",
    "labels",
    "backbone_pred",
    "test_index",
    "costs",
    "total_macs",
    "times_ms",
    "backbone_ms",
    "pool_size",
    "bootstrap_seed",
    "recal_accuracy",
    "recal_fr",
    "recal_lr",
)
RERUN = "rerun sweep_margins (snakemake reruns it when its code changed)"


def _numbered(part: str, prefix: str) -> int | None:
    """``seed3`` -> 3 for prefix ``seed``; None when ``part`` is not of that form."""
    rest = part[len(prefix) :]
    return int(rest) if part.startswith(prefix) and rest.isdigit() else None


def parse_run_path(path: str | Path) -> dict:
    """Dataset, backbone, recipe, seed and split of
    ``results/{d}/{b}/{r}/seed{s}/split{k}/<file>`` (or ``.../seed{s}/<file>``: split 0)."""
    parts = Path(path).parts
    split = _numbered(parts[-2], "split") if len(parts) >= 2 else None
    if split is not None:
        parts = parts[:-2] + parts[-1:]
    if len(parts) < 5 or _numbered(parts[-2], "seed") is None:
        raise CalexError(
            f"{path} is not laid out as results/DATASET/BACKBONE/RECIPE/seedN/splitK/FILE; "
            "pass the sweep files the workflow wrote"
        )
    return {
        "dataset": parts[-5],
        "backbone": parts[-4],
        "recipe": parts[-3],
        "seed": _numbered(parts[-2], "seed"),
        "split": split or 0,
    }


def read_tables(paths: Sequence[str | Path]) -> pd.DataFrame:
    """``frontier.csv`` or ``sweep.csv`` files in one frame, tagged with ``RUN_KEYS``."""
    frames = []
    for path in paths:
        if not Path(path).is_file():
            raise CalexError(f"{path} does not exist; {RERUN}")
        frame = pd.read_csv(path)
        missing = sorted(set(TABLE_COLUMNS) - set(frame.columns))
        if missing or frame.empty:
            raise CalexError(
                f"{path} is of an older format (no rows, or no columns {missing}); {RERUN}"
            )
        frames.append(frame.assign(**parse_run_path(path)))
    if not frames:
        raise CalexError("no sweep tables were given")
    return pd.concat(frames, ignore_index=True)


def load_exits(path: str | Path) -> dict:
    """One split's ``exits.npz`` as a dict of arrays, checked for the current format."""
    if not Path(path).is_file():
        raise CalexError(f"{path} does not exist; {RERUN}")
    with np.load(path) as data:
        missing = [k for k in EXITS_KEYS if k not in data.files]
        if missing:
            raise CalexError(f"{path} is of an older format (it lacks {missing}); {RERUN}")
        exits = {k: data[k] for k in EXITS_KEYS}
    m, n = exits["exit_branch"].shape
    if exits["final_pred"].shape != (m, n) or exits["margins"].shape != (m,):
        raise CalexError(f"{path} holds exits of inconsistent shapes; {RERUN}")
    if any(exits[k].shape != (n,) for k in ("labels", "backbone_pred", "test_index")):
        raise CalexError(f"{path} holds per-image arrays of different lengths; {RERUN}")
    curves = [exits[f"recal_{k}"].shape for k in ("accuracy", "fr", "lr")]
    if len(set(curves)) != 1 or curves[0][1:] != (m,):
        raise CalexError(f"{path} holds recalibrated curves of inconsistent shapes; {RERUN}")
    return exits


def margin_rows(margins: np.ndarray, wanted: Sequence[float], where: str) -> np.ndarray:
    """Row of each ``wanted`` margin in ``margins``; CalexError naming ``where`` if one lacks."""
    rows = []
    for margin in wanted:
        hits = np.flatnonzero(np.isclose(margins, margin, rtol=0, atol=1e-9))
        if hits.size == 0:
            raise CalexError(f"{where} has no margin {margin:g} of the paper grid; {RERUN}")
        rows.append(int(hits[0]))
    return np.asarray(rows, dtype=np.int64)


def run_grid(frame: pd.DataFrame, recipes: Sequence[str]) -> tuple[list[int], list[int]]:
    """The seeds and splits of one (dataset, backbone); every recipe must have all of them."""
    seeds = sorted(frame["seed"].unique().tolist())
    splits = sorted(frame["split"].unique().tolist())
    have = set(frame[["recipe", "seed", "split"]].itertuples(index=False, name=None))
    for recipe in recipes:
        lacking = [(s, k) for s in seeds for k in splits if (recipe, s, k) not in have]
        if lacking:
            s, k = lacking[0]
            raise CalexError(
                f"{recipe} lacks seed {s} split {k} of {frame['backbone'].iloc[0]}; pass the "
                "sweep files of every recipe, seed and split of the study"
            )
    return seeds, splits


def latency_condition(path: str | Path, batch_size: int | None) -> str:
    """'cpu, batch 256, 2 threads, torch 2.14.1': what the LR of one backbone was timed on,
    from its ``latency/segments.json`` and the batch size the sweep predicted times at."""
    try:
        info = json.loads(Path(path).read_text())
        device, threads, version = info["device"], info["threads"], info["torch"]
        batches = info["per_batch"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CalexError(
            f"{path} is not a segment-timing file ({exc}); rerun measure_segments"
        ) from exc
    if batch_size is None:
        return f"{device}, {threads} threads, torch {version}"
    if str(batch_size) not in batches:
        raise CalexError(
            f"{path} has no timings at batch size {batch_size} (latency.lr_batch_size); "
            f"it holds {sorted(batches, key=int)}: set one of them or rerun measure_segments"
        )
    return f"{device}, batch {batch_size}, {threads} threads, torch {version}"
