"""Split folders of the current sweep format (frontier.csv, sweep.csv, exits.npz), built by
hand for the report tests: a one-branch cascade whose exit fraction grows with the margin."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

PAPER_MARGINS = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8]
DENSE_MARGINS = sorted(set(np.round(np.linspace(0.0, 0.8, 33), 6)) | set(PAPER_MARGINS))
HEAD = 0.01  # MACs fraction of the one head


def cascade_exits(recipe, seed, split, n=400, reach=0.62, quality=0.9, latency=False) -> dict:
    """exits.npz arrays of one run: at margin m the first m/0.8 of the images (in a
    run-specific order) leave at the branch, so the largest margin reaches FR ``reach``;
    the branch is right on a ``quality`` share of them. Images, labels and the backbone's
    predictions depend on the split only (they pair across recipes and seeds)."""
    test_index = np.random.default_rng(1000 + split).permutation(2 * n)[:n]
    labels = test_index % 4
    backbone_pred = np.where(test_index % 7 == 0, (labels + 1) % 4, labels)
    rng = np.random.default_rng([zlib.crc32(recipe.encode()), seed, split])
    branch_pred = np.where(rng.random(n) < quality, labels, (labels + 2) % 4)
    order = rng.permutation(n)
    margins = np.asarray(DENSE_MARGINS)
    exit_branch = np.ones((margins.size, n), dtype=np.int64)
    for row, margin in enumerate(margins):
        exit_branch[row, order[: int(round(n * margin / 0.8))]] = 0
    final = np.where(exit_branch == 0, branch_pred[None], backbone_pred[None])
    times = np.array([0.5, 1.1]) if latency else np.full(2, np.nan)
    return {"margins": margins, "exit_branch": exit_branch, "final_pred": final,
            "labels": labels, "backbone_pred": backbone_pred, "test_index": test_index,
            "costs": np.array([1.0 - reach, 1.0 + HEAD]), "total_macs": np.array(1.0),
            "times_ms": times, "backbone_ms": np.array(1.0 if latency else np.nan),
            "pool_size": np.array(2 * n), "bootstrap_seed": np.array(0),
            **{f"recal_{k}": np.empty((0, margins.size))
               for k in ("accuracy", "fr", "lr")}}  # fmt: skip


def frontier_table(exits: dict) -> pd.DataFrame:
    """frontier.csv of a run (interface 2 columns), computed from its exits."""
    exit_branch = exits["exit_branch"]
    cost = exits["costs"][exit_branch].mean(axis=1)
    time = exits["times_ms"][exit_branch].mean(axis=1)
    return pd.DataFrame({
        "margin": exits["margins"],
        "accuracy": (exits["final_pred"] == exits["labels"]).mean(axis=1),
        "fr": 1.0 - cost / exits["total_macs"], "lr": 1.0 - time / exits["backbone_ms"],
        "backbone_accuracy": (exits["backbone_pred"] == exits["labels"]).mean(),
        "exit_frac_1": (exit_branch == 0).mean(axis=1),
        "exit_frac_backbone": (exit_branch == 1).mean(axis=1),
        "mean_macs": cost, "mean_ms": time,
    })  # fmt: skip


def write_run(root: Path, recipe: str, seed=0, split=0, dataset="syn", backbone="r18", **kw):
    """The split folder of one run under ``root`` (the workflow's layout); returns it."""
    folder = Path(root) / dataset / backbone / recipe / f"seed{seed}" / f"split{split}"
    folder.mkdir(parents=True)
    exits = cascade_exits(recipe, seed, split, **kw)
    np.savez(folder / "exits.npz", **exits)
    table = frontier_table(exits)
    table.to_csv(folder / "frontier.csv", index=False, float_format="%.6f")
    paper = table[np.isclose(table["margin"].to_numpy()[:, None], PAPER_MARGINS).any(axis=1)]
    paper.to_csv(folder / "sweep.csv", index=False, float_format="%.6f")
    return folder


def run_files(folders) -> tuple[list, list, list]:
    """(frontier.csv, sweep.csv, exits.npz) paths of split folders."""
    return tuple([Path(f) / name for f in folders] for name in
                 ("frontier.csv", "sweep.csv", "exits.npz"))  # fmt: skip
