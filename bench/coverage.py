"""Coverage of the tables' intervals on simulated studies with a known truth.

Usage: .venv/bin/python bench/coverage.py [--shape real|demo|both] [--repetitions 400]
           [--resamples 500] [--calibration-resamples 10] [--schemes project] [--seed 0]
           [--jobs 1]

Each repetition draws a fresh held-out pool from a simulated population of images and
runs the project's own split drawing, calibration and sweep (``cascade.sweep.sweep_split``)
for every recipe, seed and split, writes each run's ``exits.npz`` and reads them back
through the project's own bootstrap (``reporting.bootstrap.bootstrap_backbone``), as
make_tables does. The truth of every cell is computed once per shape: each seed's
branches, calibrated on fresh calibration parts of the study's size, read on a large
test set, averaged. Printed: per interval kind, the share of intervals (at nominal 95%)
that hold the truth with its Monte Carlo standard error, and how often the ranking's
contenders hold the truly best recipe. Besides ``project`` (what the tables do), the
schemes the resampling was chosen among can be run on the same studies: ``split`` (one
image resample per split, seeds and splits resampled as independent clusters: the
scheme before), ``pool`` (one weight per pool image, thresholds kept fixed) and
``crossfit`` (disjoint test folds, each pool image tested once, calibration drawn from
the other folds; resampled as ``project``). docs/results.md (section Coverage)
describes the design and records the results.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from calex_steps.cascade.sweep import compact, sweep, sweep_split
from calex_steps.data.splits import pool_resamples, stratified_split
from calex_steps.reporting import bootstrap
from calex_steps.reporting.curves import MEASURED
from calex_steps.reporting.ranking import rank

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the world beside this file
from coverage_world import (  # noqa: E402
    CONFIDENCE,
    COSTS,
    PAPER,
    RECIPES,
    REFERENCE,
    SHAPES,
    STRENGTH,
    Shape,
    World,
    design,
    grid,
    truth,
)

SCHEMES = ("project", "pool", "split", "crossfit")


def crossfit_split(val: dict, test: dict, k: int, folds: int):
    """``sweep_split``'s partition replaced by cross-fitting: the pool cut into ``folds``
    stratified folds, fold k tested, a calibration part of the usual size drawn from
    the others. Returns (val, test, val_pos, test_pos)."""
    pool = {key: v if key == "num_classes" else
            ([np.concatenate([a, b]) for a, b in zip(v, test[key], strict=True)]
             if isinstance(v, list) else np.concatenate([v, test[key]]))
            for key, v in val.items()}  # fmt: skip
    rest, cut = np.arange(pool["labels"].size), []
    for j in range(folds - 1):
        keep, part = stratified_split(pool["labels"][rest], pool["labels"].size // folds, 100 + j)
        cut.append(rest[part])
        rest = rest[keep]
    cut.append(rest)
    test_pos = np.sort(cut[k])
    others = np.sort(np.concatenate([f for j, f in enumerate(cut) if j != k]))
    n_cal = min(val["labels"].size, others.size - 1)
    val_pos = others[stratified_split(pool["labels"][others], n_cal, 200 + k)[1]]

    def take(pos):
        return {key: v if key == "num_classes" else ([a[pos] for a in v] if isinstance(v, list)
                else v[pos]) for key, v in pool.items()}  # fmt: skip

    return take(val_pos), take(test_pos), val_pos, test_pos


def study(world: World, rng, folder: Path, resamples: int, seed: int, crossfit=False) -> dict:
    """One simulated study: a fresh pool, every recipe × seed × split swept by the project's
    code and written as sweep_margins writes it. Returns ``bootstrap_backbone``'s ``runs``."""
    shape, margins = world.shape, grid(world.shape)
    val_images = world.images(shape.n_val, rng)
    test_images = world.images(shape.n_test, rng)
    pool = shape.n_val + shape.n_test
    folder.mkdir(parents=True, exist_ok=True)
    runs = {}
    for s in range(shape.seeds):
        for b in STRENGTH:
            val, test = world.outputs(val_images, b, rng), world.outputs(test_images, b, rng)
            for k in range(shape.splits):
                for recipe in (r for r in RECIPES if r.branches == b):
                    if crossfit:
                        cal, tested, val_pos, test_pos = crossfit_split(val, test, k, shape.splits)
                        w = pool_resamples(pool, range(1, resamples + 1), seed)
                        table, _, exits = sweep(cal, tested, margins, recipe.rule, COSTS,
                                                (w[:, val_pos], w[:, test_pos]))  # fmt: skip
                        exits |= {"test_index": test_pos, "pool_size": np.int64(pool),
                                  "bootstrap_seed": np.int64(seed)}  # fmt: skip
                    else:
                        table, _, exits = sweep_split(val, test, k, 0, margins, recipe.rule,
                                                      COSTS, resamples, seed)  # fmt: skip
                    path = folder / f"{recipe.name}_{s}_{k}.npz"
                    np.savez(path, **compact(exits))
                    table = table.sort_values("margin")
                    runs[(recipe.name, s, k)] = (path, table["margin"].to_numpy(),
                                                 table["accuracy"].to_numpy())  # fmt: skip
    return runs


def local_scheme(runs: dict, world: World, plan, scheme: str, rng) -> dict:
    """Estimates of the schemes the project does not run: ``pool`` (the project's pool
    weights, thresholds fixed) and ``split`` (a multinomial resample of each split's test
    images, seeds and splits drawn as crossed clusters, each split slot its own resample)."""
    names, seeds, splits = [r.name for r in RECIPES], world.shape.seeds, world.shape.splits
    targets, b = bootstrap.view_targets(plan), plan.resamples
    values = {v: np.full((len(names), seeds, splits, len(t), b + 1), np.nan)
              for v, t in targets.items()}  # fmt: skip
    status = {v: np.full((len(names), seeds, splits, len(t)), 2, np.int8)
              for v, t in targets.items()}  # fmt: skip
    reached = np.full((len(names), seeds, splits), np.nan)
    for k in range(splits):
        first = bootstrap.load_exits(runs[(names[0], 0, k)][0])
        order = np.sort(first["test_index"])
        if scheme == "pool":
            weights = bootstrap.split_weights(int(first["pool_size"]), order, b, plan.seed)
        else:
            counts = np.stack([np.bincount(rng.integers(0, order.size, order.size),
                                           minlength=order.size) for _ in range(b)])  # fmt: skip
            weights = np.vstack([np.ones((1, order.size)), counts]).astype(np.float32)
        for r, name in enumerate(names):
            for s in range(seeds):
                exits = bootstrap.aligned(bootstrap.load_exits(runs[(name, s, k)][0]), None, "")
                exits |= {key: exits[key][:0] for key in ("recal_accuracy", "recal_fr", "recal_lr")}
                tight = int(np.flatnonzero(np.isclose(exits["margins"], PAPER[0]))[0])
                got = bootstrap.run_readings(exits, weights, plan, tight)
                for v in bootstrap.VIEWS:
                    values[v][r, s, k], status[v][r, s, k] = got[v]
                reached[r, s, k] = got["reached_fr"]
    counts = bootstrap.seed_draws(seeds, b, rng)
    if scheme == "split":  # crossed clusters: mean over drawn seeds x drawn splits
        split_draws = rng.integers(0, splits, size=(b, splits))
        slots = 1 + (np.arange(b)[:, None] + np.arange(splits) * max(b // splits, 1)) % b
        for v in values:
            picked = values[v][:, :, split_draws, :, slots]  # (B, K, R, S, T)
            values[v][..., 1:] = np.moveaxis(picked.mean(axis=1), 0, -1)[:, :, None]
    return {v: bootstrap.estimate(values[v], status[v], reached, targets[v], counts)
            for v in bootstrap.VIEWS}  # fmt: skip


def covered(est, true: np.ndarray) -> np.ndarray:
    """(R, T) 1/0 where the cell is measured and its interval holds the truth, NaN elsewhere."""
    lo, hi = bootstrap.interval(est.reps, CONFIDENCE)
    return np.where(est.status == MEASURED, ((lo <= true) & (true <= hi)).astype(float), np.nan)


def best_held(est, true: np.ndarray, view: str) -> np.ndarray:
    """(T,) 1/0 where at least two recipes compete and the contenders hold the true best."""
    names = [r.name for r in RECIPES]
    rows = rank(est, names, view, CONFIDENCE, CONFIDENCE, {})
    out = np.full(len(est.targets), np.nan)
    for t, target in enumerate(est.targets):
        mine = [row for row in rows if row["target"] == float(target)]
        competing = [names.index(row["recipe"]) for row in mine if np.isfinite(row["p_best"])]
        if len(competing) < 2:
            continue
        values = true[competing, t]
        best = names[competing[int(np.argmin(values) if view != "iso_fr" else np.argmax(values))]]
        out[t] = float(any(row["recipe"] == best and row["contender"] for row in mine))
    return out


def score(est: dict, truths: dict) -> dict:
    """Every interval kind's hits in one repetition: kind -> (R, T) or (T,) 1/0/NaN."""
    names = [r.name for r in RECIPES]
    ref, out = names.index(REFERENCE), {}
    for view in ("loss_fr", "loss_lr", "iso_fr", "tight"):
        if view not in est:
            continue
        true = np.stack([truths[(name, view)] for name in names])
        out[view] = covered(est[view], true)
        if view == "tight":  # per recipe too: one calibration target can fail alone
            out |= {f"tight, {name}": out[view][r] for r, name in enumerate(names)}
        else:
            diff = covered(est[view].paired(ref), true - true[ref])
            diff[ref] = np.nan
            out[f"{view} paired"] = diff
            out[f"{view} best"] = best_held(est[view], true, view)
    return out


def repetition(world: World, truths: dict, plan, rng, schemes, resamples: int) -> dict:
    """scheme -> kind -> hits, on one simulated study."""
    names = [r.name for r in RECIPES]
    seeds, splits = list(range(world.shape.seeds)), list(range(world.shape.splits))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = study(world, rng, Path(tmp), resamples, plan.seed)
        for scheme in schemes:
            if scheme == "project":
                est = bootstrap.bootstrap_backbone(runs, names, seeds, splits, plan, "sim",
                                                   PAPER[0])  # fmt: skip
            elif scheme == "crossfit":
                folded = study(world, rng, Path(tmp) / "crossfit", resamples, plan.seed, True)
                est = bootstrap.bootstrap_backbone(folded, names, seeds, splits, plan, "sim",
                                                   PAPER[0])  # fmt: skip
            else:
                est = local_scheme(runs, world, plan, scheme, rng)
            out[scheme] = score(est, truths)
    return out


def summarise(hits: list[dict]) -> list[tuple[str, float, float, int]]:
    """Per kind: (kind, coverage, its Monte Carlo standard error over repetitions, cells)."""
    rows = []
    for kind in hits[0]:
        shares = np.array([np.nanmean(h[kind]) for h in hits if np.isfinite(h[kind]).any()])
        cells = int(np.isfinite(hits[0][kind]).sum())
        se = shares.std(ddof=1) / np.sqrt(shares.size) if shares.size > 1 else np.nan
        rows.append((kind, float(shares.mean()), float(se), cells))
    return rows


def one_repetition(task: tuple) -> dict:
    """``repetition`` number ``index`` of a shape, with its own random stream (the same
    studies whatever the number of worker processes)."""
    world, truths, plan, schemes, calibration, index = task
    rng = np.random.default_rng([plan.seed, 3, index])
    return repetition(world, truths, plan, rng, schemes, calibration)


def run_shape(shape: Shape, repetitions: int, resamples: int, calibration: int, seed: int,
              draws: int, big: int, schemes=("project",), jobs: int = 1) -> tuple:  # fmt: skip
    """({scheme: summary rows}, CPU seconds of the truth, CPU seconds of the repetitions
    (worker processes included), their wall seconds) of one shape."""
    world, plan = World(shape, seed), design(resamples, seed)
    start = time.process_time()
    truths = truth(world, plan, draws, big, seed)
    truth_cpu = time.process_time() - start
    tasks = [(world, truths, plan, tuple(schemes), calibration, i) for i in range(repetitions)]
    wall, cpu = time.perf_counter(), time.process_time() + children_cpu()
    if jobs > 1:
        pool = multiprocessing.get_context("fork").Pool(jobs)
        hits = pool.map(one_repetition, tasks, chunksize=1)
        pool.close()
        pool.join()
    else:
        hits = [one_repetition(task) for task in tasks]
    cpu = time.process_time() + children_cpu() - cpu
    rows = {scheme: summarise([h[scheme] for h in hits]) for scheme in schemes}
    return rows, truth_cpu, cpu, time.perf_counter() - wall


def children_cpu() -> float:
    """CPU seconds of the finished worker processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=[*SHAPES, "both"], default="both")
    p.add_argument("--repetitions", type=int, default=400)
    p.add_argument("--resamples", type=int, default=500, help="bootstrap replicates")
    p.add_argument("--calibration-resamples", type=int, default=10,
                   help="report.calibration_resamples of the simulated sweeps")  # fmt: skip
    p.add_argument("--schemes", nargs="+", choices=SCHEMES, default=["project"])
    p.add_argument("--draws", type=int, default=40, help="calibration parts per seed (truth)")
    p.add_argument("--big", type=int, default=200_000, help="test images of the truth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="worker processes for the repetitions")
    a = p.parse_args()
    for key in SHAPES if a.shape == "both" else [a.shape]:
        shape = SHAPES[key]
        rows, truth_cpu, reps_cpu, reps_wall = run_shape(
            shape, a.repetitions, a.resamples, a.calibration_resamples, a.seed, a.draws, a.big,
            a.schemes, a.jobs)  # fmt: skip
        print(f"\n{shape.name}: pool {shape.n_val} + {shape.n_test}, {shape.seeds} seed(s), "
              f"{shape.splits} split(s), {len(RECIPES)} recipes; {a.repetitions} repetitions, "
              f"{a.resamples} resamples, {a.calibration_resamples} recalibrated; CPU: truth "
              f"{truth_cpu:.0f} s, repetitions {reps_cpu:.0f} s ({reps_wall:.0f} s wall, "
              f"{a.jobs} process{'es' * (a.jobs > 1)})")  # fmt: skip
        for scheme, table in rows.items():
            print(f"\nscheme {scheme}\n\n| interval | coverage | Monte Carlo error | cells |")
            print("|---|---|---|---|")
            for kind, cov, se, cells in table:
                print(f"| {kind} | {100 * cov:.1f}% | ±{100 * se:.1f} | {cells} |")


if __name__ == "__main__":
    main()
