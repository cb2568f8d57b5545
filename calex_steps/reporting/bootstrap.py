"""Point estimates and paired bootstrap replicates of every reported number.

One run (recipe, seed, split) gives, per frontier margin and test image, the
image's exit and whether the cascade got it right; accuracy, FR, LR and the
backbone's accuracy are all means over the split's test images. So each
number the tables print (loss at a fixed FR or LR, the largest FR within a
loss budget, the loss at the tightest margin) is a function of which images
the held-out pool holds, how the thresholds were calibrated on them, and which
seeds were run.

The bootstrap resamples what the numbers were made from (docs/results.md,
section Intervals):
  1. the held-out pool's images: replicate b draws the pool [val; test] with
     replacement once (``data.splits.pool_resamples``); an image's count weights it
     in the test part of every split that holds it, for every recipe and seed, so
     overlapping splits share it and differences are paired;
  2. the calibration: each sweep recalibrated its thresholds on the calibration part
     of R of those resamples and read the test part of the same resample
     (``cascade.sweep.recalibrated_curves``); replicate b adds to each reading the
     shift that recalibrating on resample 1 + (b - 1) mod R made to it;
  3. the seeds: drawn with replacement, the same draw for every recipe.
A replicate averages, over its drawn seeds and every split, those readings.
Column 0 of every array is the observed data (all weights 1).
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calex_steps.data.splits import pool_resamples
from calex_steps.errors import CalexError
from calex_steps.reporting.curves import (
    MISSING,
    cap_past_end,
    largest_x_within,
    merge_columns,
    read_columns,
    reading_status,
    x_range,
)
from calex_steps.reporting.runfiles import RERUN, load_exits


@dataclass(frozen=True)
class Design:
    """What to read off each curve and how to resample.

    fr_targets, lr_targets: FLOPs and latency reductions the loss is read at.
    iso_losses: loss budgets (points) the largest FR is read at.
    tolerance: how far past the largest reduction a run reached a reading may
        still be extrapolated (further out it is missing).
    resamples: bootstrap replicates; seed: their random seed.
    """

    fr_targets: tuple[float, ...]
    lr_targets: tuple[float, ...]
    iso_losses: tuple[float, ...]
    tolerance: float
    resamples: int
    seed: int


@dataclass
class Estimate:
    """One view of one (dataset, backbone): recipes × targets.

    point (R, T) mean over seeds and splits of the observed readings (NaN when
    missing); reps (B, R, T) bootstrap replicates; per_run (R, U, T) the
    observed reading of each of the U (seed, split) runs; status (R, T) the
    worst run's ``MEASURED``/``EXTRAPOLATED``/``MISSING``; reached (R,) the
    smallest over runs of the largest reduction a run reached.
    """

    targets: np.ndarray
    point: np.ndarray
    reps: np.ndarray
    per_run: np.ndarray
    status: np.ndarray
    reached: np.ndarray

    def paired(self, reference: int) -> Estimate:
        """Every recipe minus recipe ``reference``, replicate by replicate and run by run."""
        return Estimate(
            self.targets,
            self.point - self.point[reference],
            self.reps - self.reps[:, reference : reference + 1],
            self.per_run - self.per_run[reference],
            np.maximum(self.status, self.status[reference]),
            np.minimum(self.reached, self.reached[reference]),
        )

    def spread(self) -> np.ndarray:
        """(R, T) standard deviation over runs (ddof 1; NaN with one run or a missing cell)."""
        if self.per_run.shape[1] < 2:
            return np.full(self.point.shape, np.nan)
        return np.where(np.isnan(self.point), np.nan, self.per_run.std(axis=1, ddof=1))


def interval(reps: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis of ``reps`` (NaN where a replicate is NaN)."""
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(reps, [tail, 1.0 - tail], axis=0)
    return lo, hi


def stream(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator fixed by ``seed`` and the names it serves (independent of input order)."""
    words = [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.default_rng([seed, *words])


def split_weights(pool_size: int, test_index: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(1 + B, n) float32: row 0 all ones (the data), then how often each of the split's
    test images (pool positions ``test_index``) is drawn in pool resamples 1..B."""
    out = np.ones((resamples + 1, test_index.size), np.float32)
    step = max(1, 2_000_000 // pool_size)  # resamples drawn at once (bounds the memory)
    for lo in range(1, resamples + 1, step):
        rows = range(lo, min(lo + step, resamples + 1))
        out[rows.start : rows.stop] = pool_resamples(pool_size, rows, seed)[:, test_index]
    return out


def axis_readings(x, acc, bb, targets, tolerance: float, iso_losses=()) -> dict:
    """Readings of curves on one cost axis (FR or LR), one curve per column.

    Args:
        x, acc: (M, C) reduction and accuracy per margin; bb: (C,) backbone accuracy.
        targets: reductions to read the loss at; iso_losses: loss budgets (points).

    Returns:
        ``loss``: ((T, C) loss in points, (T,) status of column 0); ``reached``:
        the largest reduction of column 0; with budgets, ``iso``: ((D, C) largest
        reduction within each budget, capped at ``tolerance`` past each column's
        end, (D,) status of column 0).
    """
    top = np.zeros((1, x.shape[1]))
    mx, my, count = merge_columns(np.vstack([top, x]), np.vstack([bb[None], acc]))
    low, high = x_range(mx, count)
    # an accuracy is in [0, 1]: a steep end segment continued past the last point stays so,
    # and a rising one does not promise more than the last point measured
    last_y = my[count - 1, np.arange(mx.shape[1])]
    reading = cap_past_end(read_columns(mx, my, count, targets), targets, high, last_y)
    loss = 100.0 * (bb - np.clip(reading, 0.0, 1.0))
    out = {"loss": (loss, reading_status(targets, low[0], high[0], tolerance)), "reached": high[0]}
    if len(iso_losses):
        curve = 100.0 * (bb - my)
        iso = np.stack([largest_x_within(mx, curve, count, level) for level in iso_losses])
        status = reading_status(iso[:, 0], low[0], high[0], tolerance)
        out["iso"] = (np.minimum(iso, high + tolerance), status)
    return out


def run_readings(exits: dict, weights: np.ndarray, design: Design, tight_row: int) -> dict:
    """Every reading of one run, observed (column 0) and per replicate (columns 1..B).

    ``weights`` (1+B, n): the test images' counts in each replicate (``split_weights``).
    Where the run holds R recalibrated curves, replicate b's reading is shifted by
    what recalibrating on resample 1 + (b - 1) mod R changed in that resample's reading.

    Returns {view: (values (T, 1+B), status (T,))} for views ``loss_fr``,
    ``iso_fr``, ``tight`` and (when the run has latency) ``loss_lr``, plus
    ``reached_fr`` / ``reached_lr``.
    """
    total = weights.sum(axis=1, dtype=np.float64)
    columns = weights.shape[0]
    sets = min(exits["recal_accuracy"].shape[0], columns - 1)

    def mean(per_image: np.ndarray) -> np.ndarray:
        """(M, N) per-image values -> (M, 1+B) weighted means (``W @ A.T``: BLAS's fast case)."""
        sums = (weights @ per_image.astype(np.float32).T).T.astype(np.float64)
        return sums / np.maximum(total, 1e-12)

    def shifted(values: np.ndarray) -> np.ndarray:
        """(T, 1+B+R) readings of the replicates then of the recalibrated curves -> (T, 1+B)."""
        base = values[:, :columns]
        if sets:
            shift = values[:, columns:] - base[:, 1 : 1 + sets]
            base[:, 1:] += shift[:, np.arange(columns - 1) % sets]
        return base

    acc = mean(exits["final_pred"] == exits["labels"])
    bb = mean((exits["backbone_pred"] == exits["labels"])[None])[0]
    recal_bb = bb[1 : 1 + sets]  # the recalibrated curves read the same resamples
    acc_all = np.hstack([acc, exits["recal_accuracy"][:sets].T])
    bb_all = np.r_[bb, recal_bb]
    axes = {"fr": (exits["costs"] / float(exits["total_macs"]), "recal_fr", design.fr_targets)}
    if has_latency(exits):
        axes["lr"] = (exits["times_ms"] / float(exits["backbone_ms"]), "recal_lr",
                      design.lr_targets)  # fmt: skip
    out = {}
    for axis, (cost, key, targets) in axes.items():
        x = np.hstack([1.0 - mean(cost[exits["exit_branch"]]), exits[key][:sets].T])
        iso = design.iso_losses if axis == "fr" else ()
        view = axis_readings(x, acc_all, bb_all, targets, design.tolerance, iso)
        out[f"loss_{axis}"] = (shifted(view["loss"][0]), view["loss"][1])
        out[f"reached_{axis}"] = view["reached"]
        if iso:
            out["iso_fr"] = (shifted(view["iso"][0]), view["iso"][1])
    tight = 100.0 * (bb_all - acc_all[tight_row])[None]
    out["tight"] = (shifted(tight), np.zeros(1, np.int8))
    return out


def has_latency(exits: dict) -> bool:
    """Whether the sweep predicted times for this run (interface: NaN when unmeasured)."""
    return bool(np.all(np.isfinite(exits["times_ms"])) and np.isfinite(exits["backbone_ms"]))


def aligned(exits: dict, order_ref: np.ndarray | None, path: Path) -> dict:
    """The run's per-image arrays in ascending ``test_index`` order, checked against
    the split's other runs (``order_ref``: their sorted ``test_index``)."""
    order = np.argsort(exits["test_index"], kind="stable")
    out = dict(exits)
    for key in ("labels", "backbone_pred", "test_index"):
        out[key] = exits[key][order]
    for key in ("exit_branch", "final_pred"):
        out[key] = exits[key][:, order]
    if order_ref is not None and not np.array_equal(out["test_index"], order_ref):
        raise CalexError(
            f"{path} scores other test images than the split's other runs; {RERUN} for all"
        )
    return out


def seed_draws(num_seeds: int, resamples: int, rng) -> np.ndarray:
    """(B, S) how often each seed is drawn in each replicate (S draws with replacement)."""
    draws = rng.integers(0, num_seeds, size=(resamples, num_seeds))
    return np.stack([np.bincount(row, minlength=num_seeds) for row in draws]).astype(np.float64)


def estimate(values, status, reached, targets, seed_counts) -> Estimate:
    """Combine per-run readings (R, S, K, T, 1+B) into one ``Estimate``: a replicate is
    the mean over its drawn seeds (``seed_counts`` (B, S)) and every split."""
    cell = status.max(axis=(1, 2))  # (R, T): the worst run decides
    gone = cell == MISSING
    per_run = values[..., 0].reshape(values.shape[0], -1, values.shape[3])  # (R, S*K, T)
    point = np.where(gone, np.nan, per_run.mean(axis=1))
    by_seed = values[..., 1:].mean(axis=2)  # (R, S, T, B)
    reps = np.einsum("bs,rstb->brt", seed_counts, by_seed) / seed_counts.shape[1]
    reps = np.where(gone[None], np.nan, reps)
    return Estimate(
        np.asarray(targets, float), point, reps, per_run, cell, reached.min(axis=(1, 2))
    )


VIEWS = ("loss_fr", "iso_fr", "tight", "loss_lr")
AXIS = {"loss_fr": "fr", "iso_fr": "fr", "tight": "fr", "loss_lr": "lr"}


def view_targets(design: Design) -> dict[str, tuple[float, ...]]:
    """What each view is read at: FRs, loss budgets, the tightest margin (one value), LRs."""
    return {"loss_fr": design.fr_targets, "iso_fr": design.iso_losses, "tight": (0.0,),
            "loss_lr": design.lr_targets}  # fmt: skip


def check_frontier(exits: dict, margins, accuracy, path: Path) -> None:
    """The table's margins and accuracies must be those of the exits (one run, one grid)."""
    order = np.argsort(exits["margins"])
    observed = np.mean(exits["final_pred"] == exits["labels"], axis=1)[order]
    margins, accuracy = np.asarray(margins, np.float64), np.asarray(accuracy, np.float64)
    same = margins.shape == order.shape and np.allclose(margins, exits["margins"][order], atol=1e-6)
    if not (same and np.allclose(observed, accuracy, atol=2e-6)):
        raise CalexError(f"frontier.csv beside {path} does not match its exits; {RERUN}")


def check_resamples(exits: dict, design: Design, resamples: int | None, path: Path) -> None:
    """The recalibrated curves must come from this bootstrap's pool resamples."""
    sets = exits["recal_accuracy"].shape[0]
    if sets and int(exits["bootstrap_seed"]) != design.seed:
        raise CalexError(
            f"{path} was recalibrated on the resamples of bootstrap seed "
            f"{int(exits['bootstrap_seed'])}, the tables use {design.seed} "
            f"(report.bootstrap_seed); {RERUN}"
        )
    if resamples is not None and sets not in (0, resamples):
        raise CalexError(
            f"{path} holds {sets} recalibrated resamples, report.calibration_resamples asks "
            f"for {resamples}; {RERUN}"
        )


def bootstrap_backbone(runs: dict, recipes, seeds, splits, design: Design, backbone: str,
                       tight_margin: float, calibration_resamples=None) -> dict:  # fmt: skip
    """Estimates of every view for one (dataset, backbone).

    Args:
        runs: (recipe, seed, split) -> (path of the run's ``exits.npz``, the
            margins and accuracies of its ``frontier.csv``, ascending by margin).
        recipes, seeds, splits: the grid, every cell present.
        design: targets, tolerance, resamples, seed.
        backbone: its name (keys the seeds' random stream).
        tight_margin: the paper grid's smallest margin.
        calibration_resamples: how many recalibrated curves a run must hold (0 for a
            rule that reads no calibration data); None checks nothing.

    Returns:
        {view: Estimate} for ``loss_fr``, ``iso_fr``, ``tight`` and, when every
        run has latency, ``loss_lr``.
    """
    shape = (len(recipes), len(seeds), len(splits))
    targets = view_targets(design)
    values = {
        v: np.full((*shape, len(t), design.resamples + 1), np.nan) for v, t in targets.items()
    }
    status = {v: np.full((*shape, len(t)), MISSING, np.int8) for v, t in targets.items()}
    reached = {axis: np.full(shape, np.nan) for axis in ("fr", "lr")}
    pool = None
    for k, split in enumerate(splits):
        weights, reference = None, None
        for (r, recipe), (s, seed) in itertools.product(enumerate(recipes), enumerate(seeds)):
            path, margins, accuracy = runs[(recipe, seed, split)]
            exits = aligned(load_exits(path), reference, path)
            check_frontier(exits, margins, accuracy, path)
            check_resamples(exits, design, calibration_resamples, path)
            if pool is None:
                pool = int(exits["pool_size"])
            if int(exits["pool_size"]) != pool:
                raise CalexError(f"{path} was swept on another held-out pool than the "
                                 f"study's other runs; {RERUN} for all")  # fmt: skip
            if weights is None:
                reference = exits["test_index"]
                weights = split_weights(pool, reference, design.resamples, design.seed)
            rows = np.flatnonzero(np.isclose(exits["margins"], tight_margin, rtol=0, atol=1e-9))
            if rows.size == 0:
                raise CalexError(f"{path} lacks the margin {tight_margin:g}; {RERUN}")
            got = run_readings(exits, weights, design, int(rows[0]))
            for view in VIEWS:
                if view in got:
                    values[view][r, s, k], status[view][r, s, k] = got[view]
            for axis in reached:
                reached[axis][r, s, k] = got.get(f"reached_{axis}", np.nan)
    counts = seed_draws(len(seeds), design.resamples, stream(design.seed, backbone))
    measured = {v for v in VIEWS if v != "loss_lr" or np.isfinite(reached["lr"]).all()}
    return {
        v: estimate(values[v], status[v], reached[AXIS[v]], targets[v], counts)
        for v in VIEWS
        if v in measured
    }
