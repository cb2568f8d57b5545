"""The simulated world of bench/coverage.py: a population of images with a known truth.

The population, the simulated recipes and branch sets, the exit costs, and the truth of
every table cell (each seed's branches calibrated on fresh calibration parts of the
study's size and read on a large test set). docs/results.md (section Coverage)
describes the design.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from calex_steps.cascade.sweep import ExitCosts, ExitRule, margin_grid, sweep
from calex_steps.reporting import bootstrap

PAPER = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8)
DENSE = {"low": 0.001, "high": 0.95, "count": 48}  # the workflow's sweep.dense
COSTS = ExitCosts(macs=(0.2, 0.45, 0.7, 1.02), total_macs=1.0,
                  times_ms=(0.3, 0.55, 0.78, 1.03), backbone_ms=1.0)  # fmt: skip
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Shape:
    """The size of a study: classes, calibration and test parts, seeds, splits, margins."""

    name: str
    classes: int
    n_val: int
    n_test: int
    seeds: int
    splits: int
    dense: int = DENSE["count"]


SHAPES = {
    "real": Shape("real-data", 10, 5000, 5000, 3, 5),
    "demo": Shape("demo", 8, 2000, 2000, 1, 1),
}


@dataclass(frozen=True)
class Recipe:
    """A simulated recipe: which branches (``a`` stronger, ``b`` weaker) and its exit rule."""

    name: str
    branches: str
    rule: ExitRule


RECIPES = (
    Recipe("cpm", "a", ExitRule(target="cpm", calibration="cascade")),
    Recipe("matched", "a", ExitRule(target="matched", calibration="full")),
    Recipe("agree", "a", ExitRule(target="agree", calibration="full")),
    Recipe("global", "b", ExitRule(thresholds="global")),
)
REFERENCE = "cpm"
STRENGTH = {"a": (-0.3, 0.35, 0.85), "b": (-0.4, 0.25, 0.8)}  # per branch


@dataclass
class World:
    """A population of images and, per (branch set, seed), the branches trained on it.

    An image has a label, a class-dependent difficulty z and the backbone's
    prediction (right when z plus noise is small). Branch l of a seed is right when
    its strength minus a share of z minus per-image noise (shared in part across the
    branches of a seed) is positive; its confidence is a noisy sigmoid of the same
    quantity; a wrong branch often repeats the backbone's mistake. Seeds differ only
    in their per-image noise, so every seed has the same expected loss.
    """

    shape: Shape
    seed: int
    difficulty: np.ndarray = field(init=False)

    def __post_init__(self):
        rng = np.random.default_rng([self.seed, 1])
        self.difficulty = rng.permutation(np.linspace(-0.6, 0.6, self.shape.classes))

    def images(self, n: int, rng) -> dict:
        """Labels, difficulty and the backbone's prediction of ``n`` fresh images."""
        c = self.shape.classes
        labels = rng.integers(0, c, n)
        z = self.difficulty[labels] + rng.normal(size=n)
        right = z + 0.6 * rng.normal(size=n) < 1.15
        wrong = (labels + 1 + rng.integers(0, c - 1, n)) % c
        return {"labels": labels, "z": z, "backbone_pred": np.where(right, labels, wrong)}

    def outputs(self, images: dict, branches: str, rng) -> dict:
        """The sweep's input dict of one seed of a branch set on ``images``."""
        n, c = images["z"].shape[0], self.shape.classes
        shared = rng.normal(size=n)
        mistaken = images["backbone_pred"] != images["labels"]
        confs, preds = [], []
        for strength in STRENGTH[branches]:
            u = strength - 0.8 * images["z"] - 0.6 * (0.6 * shared + 0.8 * rng.normal(size=n))
            confs.append(1.0 / (1.0 + np.exp(-(1.5 * u + 0.8 * rng.normal(size=n)))))
            other = (images["labels"] + 1 + rng.integers(0, c - 1, n)) % c
            copy = mistaken & (rng.random(n) < 0.5)
            preds.append(np.where(u > 0, images["labels"],
                                  np.where(copy, images["backbone_pred"], other)))  # fmt: skip
        return {"confs": confs, "preds": preds, "labels": images["labels"],
                "backbone_pred": images["backbone_pred"], "num_classes": c}  # fmt: skip


def grid(shape: Shape) -> list[float]:
    """The frontier grid: the paper's margins and ``shape.dense`` log-spaced ones."""
    return margin_grid(PAPER, {**DENSE, "count": shape.dense})


def design(resamples: int, seed: int) -> bootstrap.Design:
    """The workflow's default report settings with ``resamples`` replicates."""
    return bootstrap.Design((0.4, 0.5, 0.6, 0.7, 0.8), (0.2, 0.3, 0.4, 0.5, 0.6), (0.5, 1.0),
                            0.08, resamples, seed)  # fmt: skip


def readings(exits: dict, plan: bootstrap.Design) -> dict:
    """A run's readings on its own images, as the tables read one curve."""
    n = exits["labels"].shape[0]
    exits = exits | {k: np.empty((0, exits["margins"].size)) for k in
                     ("recal_accuracy", "recal_fr", "recal_lr")}  # fmt: skip
    tight = int(np.flatnonzero(np.isclose(exits["margins"], PAPER[0]))[0])
    got = bootstrap.run_readings(exits, np.ones((1, n), np.float32), plan, tight)
    return {v: got[v][0][:, 0] for v in bootstrap.VIEWS}


def truth(world: World, plan, draws: int, big: int, seed: int) -> dict:
    """(recipe, view) -> the mean over seeds of each seed's expected reading on the
    population: calibrated on ``draws`` fresh calibration parts, read on ``big`` images."""
    rng = np.random.default_rng([seed, 2])
    test_images, out = world.images(big, rng), {}
    for _ in range(world.shape.seeds):
        tests = {b: world.outputs(test_images, b, rng) for b in STRENGTH}
        for _ in range(draws):
            cal_images = world.images(world.shape.n_val, rng)
            cals = {b: world.outputs(cal_images, b, rng) for b in STRENGTH}
            for recipe in RECIPES:
                b = recipe.branches
                exits = sweep(cals[b], tests[b], grid(world.shape), recipe.rule, COSTS)[2]
                for view, value in readings(exits, plan).items():
                    out.setdefault((recipe.name, view), []).append(value)
    return {key: np.mean(values, axis=0) for key, values in out.items()}
