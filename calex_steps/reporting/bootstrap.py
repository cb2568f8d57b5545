"""Point estimates and paired, two-level bootstrap replicates of every reported number.

One run (recipe, seed, split) gives, per frontier margin and test image, the
image's exit and whether the cascade got it right; accuracy, FR, LR and the
backbone's accuracy are all means over the split's test images. So each
number the tables print (loss at a fixed FR or LR, the largest FR within a
loss budget, the loss at the tightest margin) is a function of which test
images were drawn, and of which seeds and splits were run.

The bootstrap resamples both (docs/results.md, section Intervals):
  1. within a split, the test images: one multinomial count vector per
     replicate, shared by every recipe and seed of the split (they classify the
     same images, matched by ``test_index``): differences are paired;
  2. across runs, the seeds and the splits, with replacement and independently
     (a crossed design), shared by every recipe: recipe r's seed s is compared
     with the reference's seed s.
A replicate averages, over its drawn seeds × drawn splits, the numbers read on
the image-resampled curves of those runs. Each drawn split slot takes its
own image resample, so a split drawn twice is not counted with the same images
twice. Column 0 of every array is the observed data (all weights 1).
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


def image_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(1 + B, n) float32: row 0 all ones (the data), then B multinomial resamples of n images."""
    draws = rng.integers(0, n, size=(resamples, n))
    counts = np.bincount(
        (draws + n * np.arange(resamples)[:, None]).ravel(), minlength=resamples * n
    )
    return np.vstack([np.ones((1, n)), counts.reshape(resamples, n)]).astype(np.float32)


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
    """Every reading of one run, observed (column 0) and per image resample.

    Returns {view: (values (T, 1+B), status (T,))} for views ``loss_fr``,
    ``iso_fr``, ``tight`` and (when the run has latency) ``loss_lr``, plus
    ``reached_fr`` / ``reached_lr``.
    """
    n = exits["labels"].shape[0]

    def mean(per_image: np.ndarray) -> np.ndarray:
        """(M, N) per-image values -> (M, 1+B) weighted means (``W @ A.T``: BLAS's fast case)."""
        return (weights @ per_image.astype(np.float32).T).T.astype(np.float64) / n

    acc = mean(exits["final_pred"] == exits["labels"])
    bb = mean((exits["backbone_pred"] == exits["labels"])[None])[0]
    fr = 1.0 - mean((exits["costs"] / float(exits["total_macs"]))[exits["exit_branch"]])
    fr_view = axis_readings(fr, acc, bb, design.fr_targets, design.tolerance, design.iso_losses)
    out = {"loss_fr": fr_view["loss"], "iso_fr": fr_view["iso"], "reached_fr": fr_view["reached"]}
    out["tight"] = (100.0 * (bb - acc[tight_row])[None], np.zeros(1, np.int8))
    if has_latency(exits):
        lr = 1.0 - mean((exits["times_ms"] / float(exits["backbone_ms"]))[exits["exit_branch"]])
        lr_view = axis_readings(lr, acc, bb, design.lr_targets, design.tolerance)
        out["loss_lr"], out["reached_lr"] = lr_view["loss"], lr_view["reached"]
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


def _combine(values: np.ndarray, draws: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """(B, R, T) replicates from per-run readings ``values`` (R, S, K, T, 1+B)."""
    seeds, splits, columns = draws  # (B, S), (B, K), (B, K)
    picked = values[:, seeds[:, :, None], splits[:, None, :], :, columns[:, None, :]]
    return picked.mean(axis=(1, 2))  # picked: (B, S, K, R, T)


def top_draws(num_seeds, num_splits, resamples, rng) -> tuple[np.ndarray, ...]:
    """Seeds and splits drawn with replacement per replicate, and the image resample
    (column 1..B) each drawn split slot uses: distinct within a replicate."""
    seeds = rng.integers(0, num_seeds, size=(resamples, num_seeds))
    splits = rng.integers(0, num_splits, size=(resamples, num_splits))
    stride = max(resamples // num_splits, 1)
    slots = np.arange(num_splits) * stride
    columns = 1 + (np.arange(resamples)[:, None] + slots[None]) % resamples
    return seeds, splits, columns


def estimate(values, status, reached, targets, draws) -> Estimate:
    """Combine per-run readings (R, S, K, T, 1+B) into one ``Estimate``."""
    cell = status.max(axis=(1, 2))  # (R, T): the worst run decides
    gone = cell == MISSING
    per_run = values[..., 0].reshape(values.shape[0], -1, values.shape[3])  # (R, S*K, T)
    point = np.where(gone, np.nan, per_run.mean(axis=1))
    reps = np.where(gone[None], np.nan, _combine(values, draws))
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


def bootstrap_backbone(runs: dict, recipes, seeds, splits, design: Design, backbone: str,
                       tight_margin: float) -> dict:  # fmt: skip
    """Estimates of every view for one (dataset, backbone).

    Args:
        runs: (recipe, seed, split) -> (path of the run's ``exits.npz``, the
            margins and accuracies of its ``frontier.csv``, ascending by margin).
        recipes, seeds, splits: the grid, every cell present.
        design: targets, tolerance, resamples, seed.
        backbone: its name (keys the random streams).
        tight_margin: the paper grid's smallest margin.

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
    for k, split in enumerate(splits):
        rng = stream(design.seed, backbone, "images", split)
        weights, reference = None, None
        for (r, recipe), (s, seed) in itertools.product(enumerate(recipes), enumerate(seeds)):
            path, margins, accuracy = runs[(recipe, seed, split)]
            exits = aligned(load_exits(path), reference, path)
            check_frontier(exits, margins, accuracy, path)
            if weights is None:
                reference = exits["test_index"]
                weights = image_weights(reference.size, design.resamples, rng)
            rows = np.flatnonzero(np.isclose(exits["margins"], tight_margin, rtol=0, atol=1e-9))
            if rows.size == 0:
                raise CalexError(f"{path} lacks the margin {tight_margin:g}; {RERUN}")
            got = run_readings(exits, weights, design, int(rows[0]))
            for view in VIEWS:
                if view in got:
                    values[view][r, s, k], status[view][r, s, k] = got[view]
            for axis in reached:
                reached[axis][r, s, k] = got.get(f"reached_{axis}", np.nan)
    draws = top_draws(len(seeds), len(splits), design.resamples, stream(design.seed, backbone))
    measured = {v for v in VIEWS if v != "loss_lr" or np.isfinite(reached["lr"]).all()}
    return {
        v: estimate(values[v], status[v], reached[AXIS[v]], targets[v], draws)
        for v in VIEWS
        if v in measured
    }
