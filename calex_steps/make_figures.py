"""Stage `make_figures`: the comparison figures of one (dataset, backbone), SPEC section 10.

Usage (one subcommand per figure family, each writing one PNG and one PDF):
    python -m calex_steps.make_figures pareto --sweeps .../seed*/sweep.csv --settings JSON ...
    python -m calex_steps.make_figures ablation --sweeps ... --settings JSON ...
    python -m calex_steps.make_figures calibration --exits .../seed*/exits.npz --settings JSON ...
    python -m calex_steps.make_figures shift --exits ... --prepared prepared.h5 --settings JSON ...
    python -m calex_steps.make_figures flow --exits ... --prepared prepared.h5 --settings JSON ...
    python -m calex_steps.make_figures exemplars --exits ONE/exits.npz --prepared prepared.h5 \
        --features features.h5 --settings JSON ...
  each with --out-png FILE --out-pdf FILE.

``--settings`` holds ``recipes`` (legend order), ``margins`` (the configured
sweep) and ``exit_signals`` (recipe -> ``branch`` or ``ztw_ensemble``: which
files beside ``exits.npz`` hold the confidences the thresholds act on).
A margin the figure asks for but the sweep lacks is replaced by the nearest
configured one, and the panel title says so.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from calex_steps import figures, metrics, tables
from calex_steps.io import CalexError, parse_json_arg, run_main, setup_logging

ABLATION_FRS = (0.4, 0.6)
ECE_MARGINS = (0.05, 0.2, 0.4)
SHIFT_MARGIN = 0.2
EXEMPLARS_PER_KIND = 4
SETTINGS_KEYS = ("recipes", "margins", "exit_signals")


def _check_settings(settings: dict) -> dict:
    """Reject unknown keys; default the margins to the paper's and the signals to branches."""
    unknown = sorted(set(settings) - set(SETTINGS_KEYS))
    if unknown or "recipes" not in settings:
        raise CalexError(
            f"--settings takes the keys {list(SETTINGS_KEYS)} (recipes required); got "
            f"{sorted(settings)}"
        )
    return {"margins": [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8], "exit_signals": {}, **settings}


# ---- reading runs ------------------------------------------------------------


def pick_margin(margins: Sequence[float], wanted: float) -> tuple[float, str]:
    """The configured margin nearest ``wanted`` and a title note when it is not ``wanted``."""
    if not margins:
        raise CalexError("the sweep has no margins; set sweep.margins in the configuration")
    margin = float(min(margins, key=lambda m: (abs(m - wanted), m)))
    note = "" if np.isclose(margin, wanted) else f" (nearest configured to {wanted:g})"
    return margin, note


def load_run(exits: Path, exit_signals: dict, with_signals: bool = True) -> dict:
    """One run's test exits, thresholds and (optionally) its branches' exit signals.

    Reads ``exits.npz``, ``thresholds.npz`` and ``branch{l}.npz`` (or
    ``ztw_ensemble{l}.npz`` for a recipe whose exit signal is the ensemble)
    from the run folder of ``exits``.

    Returns:
        dict with ``recipe``, ``seed``, ``margins`` (M,), ``exit_branch`` (M, N),
        ``final_pred`` (M, N), ``labels`` (N,), ``thresholds`` (margin key ->
        (L, C)), ``num_branches`` and, with signals, ``conf``/``pred`` (lists of (N,)).
    """
    exits = Path(exits)
    info = tables.parse_run_path(exits)
    folder = exits.parent
    for path in (exits, folder / "thresholds.npz"):
        if not path.is_file():
            raise CalexError(f"{path} does not exist; run sweep_margins first")
    with np.load(exits) as data:
        run = {**info, **{k: data[k] for k in ("margins", "exit_branch", "final_pred", "labels")}}
    with np.load(folder / "thresholds.npz") as data:
        run["thresholds"] = {k: data[k] for k in data.files}
    run["num_branches"] = int(next(iter(run["thresholds"].values())).shape[0])
    if with_signals:
        stem = "ztw_ensemble" if exit_signals.get(info["recipe"]) == "ztw_ensemble" else "branch"
        run["conf"], run["pred"] = [], []
        for number in range(1, run["num_branches"] + 1):
            path = folder / f"{stem}{number}.npz"
            if not path.is_file():
                raise CalexError(f"{path} does not exist; run the branch training of this recipe")
            with np.load(path) as data:
                run["conf"].append(data["test_conf"].astype(np.float64))
                run["pred"].append(data["test_pred"].astype(np.int64))
    return run


def margin_row(run: dict, margin: float) -> int:
    """Row of ``margin`` in a run's exits; CalexError when the sweep did not run it."""
    hits = np.flatnonzero(np.isclose(run["margins"], margin))
    if hits.size == 0:
        raise CalexError(
            f"{run['recipe']} seed {run['seed']} has no margin {margin:g}; rerun sweep_margins"
        )
    return int(hits[0])


def class_names(prepared: Path) -> list[str]:
    """The task's class names from the root attribute ``class_names`` of ``prepared.h5``."""
    with h5py.File(prepared, "r") as f:
        if "class_names" not in f.attrs:
            raise CalexError(f"{prepared} has no class_names attribute; rerun prepare_dataset")
        return list(json.loads(f.attrs["class_names"]))


def test_images(prepared: Path, features: Path) -> np.ndarray:
    """(N, 32, 32, 3) uint8 test images in the order of the cache (and of every branch output).

    The cache copies the prepared test split in order; its ``index`` must
    equal the prepared one, else the images would not match the exits.
    """
    with h5py.File(prepared, "r") as f, h5py.File(features, "r") as g:
        if not np.array_equal(f["test"]["index"][...], g["test"]["index"][...]):
            raise CalexError(
                f"test samples of {features} are not those of {prepared} in order; "
                "rerun cache_features"
            )
        return f["test"]["images"][...]


# ---- tidy tables for the figures ------------------------------------------------


def pareto_points(sweeps: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of FR and accuracy per (recipe, margin)."""
    grouped = sweeps.groupby(["recipe", "margin"], sort=False)
    out = grouped.agg(
        fr_mean=("fr", "mean"),
        fr_std=("fr", "std"),
        acc_mean=("accuracy", "mean"),
        acc_std=("accuracy", "std"),
        seeds=("seed", "nunique"),
    )
    return out.reset_index()


def _mean_std(frame: pd.DataFrame, keys: list[str], stats: Sequence[str]) -> pd.DataFrame:
    """Mean and std over seeds of each statistic, as ``{stat}_mean`` and ``{stat}_std``."""
    grouped = frame.groupby(keys, sort=False)
    named = {}
    for stat in stats:
        named[f"{stat}_mean"] = (stat, "mean")
        named[f"{stat}_std"] = (stat, "std")
    return grouped.agg(**named).reset_index()


def ece_table(runs: Sequence[dict], margins: Sequence[float]) -> pd.DataFrame:
    """Exit-conditional ECE of every branch of every run at each margin (SPEC section 10).

    Only the samples that exited at branch l count; the bins span the
    branch's lowest threshold to 1.0; correctness is against ground truth.
    """
    rows = []
    for run in runs:
        for margin in margins:
            row = margin_row(run, margin)
            thresholds = run["thresholds"][f"m{margin:g}"]  # (L, C)
            for b in range(run["num_branches"]):
                exited = run["exit_branch"][row] == b  # (N,)
                conf = run["conf"][b][exited]
                correct = run["pred"][b][exited] == run["labels"][exited]
                low = min(float(thresholds[b].min()), 1.0 - 1e-6)
                ece = metrics.expected_calibration_error(conf, correct, low)
                rows.append((margin, run["recipe"], run["seed"], f"B{b + 1}", ece, conf.size))
    frame = pd.DataFrame(rows, columns=["margin", "recipe", "seed", "position", "ece", "n"])
    return _mean_std(frame, ["margin", "recipe", "position"], ["ece", "n"])


def shift_table(runs: Sequence[dict], margin: float, num_classes: int) -> pd.DataFrame:
    """KL(full ‖ survivors), Gini and top-3 share of the samples reaching each exit position."""
    rows = []
    for run in runs:
        exit_branch = run["exit_branch"][margin_row(run, margin)]  # (N,)
        labels = run["labels"]
        full = metrics.class_distribution(labels, num_classes)
        names = figures.exit_labels(run["num_branches"])
        for position, name in enumerate(names):
            reach = labels[exit_branch >= position]  # samples no earlier branch released
            counts = np.bincount(reach, minlength=num_classes)
            # Half a sample per class keeps the KL finite when a class has no survivor.
            smooth = metrics.class_distribution(reach, num_classes, pseudo_count=0.5)
            kl = metrics.kl_divergence(full, smooth) if reach.size else np.nan
            gini = metrics.gini_coefficient(counts)
            top3 = metrics.top_k_share(counts, 3)
            rows.append((run["recipe"], run["seed"], name, kl, gini, top3))
    frame = pd.DataFrame(rows, columns=["recipe", "seed", "position", "kl", "gini", "top3"])
    return _mean_std(frame, ["recipe", "position"], ["kl", "gini", "top3"])


def flow_table(runs: Sequence[dict], margin: float, num_classes: int) -> pd.DataFrame:
    """Share of each class's test samples leaving at each exit position, mean over seeds."""
    rows = []
    for run in runs:
        exit_branch = run["exit_branch"][margin_row(run, margin)]
        names = figures.exit_labels(run["num_branches"])
        slots = len(names) * num_classes
        counts = np.bincount(run["labels"] * len(names) + exit_branch, minlength=slots)
        counts = counts.reshape(num_classes, len(names))  # (C, L+1)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        for c in range(num_classes):
            for p, name in enumerate(names):
                rows.append((run["recipe"], run["seed"], c, name, shares[c, p]))
    frame = pd.DataFrame(rows, columns=["recipe", "seed", "class", "position", "share"])
    return frame.groupby(["recipe", "class", "position"], sort=False)["share"].mean().reset_index()


def exemplar_cells(
    run: dict, images: np.ndarray, names: Sequence[str], margin: float, k: int
) -> list[list[dict | None]]:
    """Per branch, ``k`` correct exits nearest their threshold and ``k`` deepest above it.

    The slack of an exit is its confidence minus the threshold of its
    predicted class; near-threshold = smallest slack, deep = largest.
    """
    row = margin_row(run, margin)
    thresholds = run["thresholds"][f"m{margin:g}"]  # (L, C)
    cells = []
    for b in range(run["num_branches"]):
        pred, conf = run["pred"][b], run["conf"][b]
        chosen = np.flatnonzero((run["exit_branch"][row] == b) & (pred == run["labels"]))
        slack = conf[chosen] - thresholds[b][pred[chosen]]
        order = chosen[np.argsort(slack, kind="stable")]
        # Few exits: split them between the two groups rather than showing one twice.
        n_near = min(k, -(-order.size // 2))
        near = list(order[:n_near])
        deep = list(order[::-1][: min(k, order.size - n_near)])
        cells_l = []
        for group in (near, deep):
            for j in range(k):
                if j >= len(group):
                    cells_l.append(None)
                    continue
                i = group[j]
                caption = f"{names[pred[i]]}\nR={conf[i]:.2f} T={thresholds[b][pred[i]]:.2f}"
                cells_l.append({"image": images[i], "caption": caption,
                                "row_label": f"branch {b + 1}"})  # fmt: skip
        cells.append(cells_l)
    return cells


# ---- the figures ------------------------------------------------------------------


def _where(paths: Sequence[Path]) -> str:
    """'dataset, backbone' of a set of run files, which must agree."""
    runs = {(i["dataset"], i["backbone"]) for i in map(tables.parse_run_path, paths)}
    if len(runs) != 1:
        raise CalexError(f"a figure shows one dataset and backbone; the inputs span {sorted(runs)}")
    return ", ".join(runs.pop())


def _seeds_note(frame: pd.DataFrame) -> str:
    """'1 seed' or 'mean ± std over N seeds'."""
    n = frame["seed"].nunique()
    return "1 seed" if n == 1 else f"mean ± std over {n} seeds"


def run_pareto(sweeps: Sequence[Path], settings: dict, out_png: Path, out_pdf: Path) -> None:
    """Pareto frontier of every recipe of one (dataset, backbone)."""
    settings = _check_settings(settings)
    frame = tables.read_sweeps(sweeps)
    points = pareto_points(frame)
    title = f"Pareto frontier: {_where(sweeps)} ({_seeds_note(frame)})"
    backbone_acc = float(frame["backbone_accuracy"].mean())
    fig = figures.plot_pareto(points, backbone_acc, settings["recipes"], title)
    figures.save_figure(fig, out_png, out_pdf)


def run_ablation(sweeps: Sequence[Path], settings: dict, out_png: Path, out_pdf: Path) -> None:
    """The alignment × KD grid at FR 0.4 and 0.6."""
    _check_settings(settings)
    frame = tables.read_sweeps(sweeps)
    losses = tables.summarise_loss(tables.loss_per_seed(frame, ABLATION_FRS))
    title = f"Ablation, alignment × KD: {_where(sweeps)} ({_seeds_note(frame)})"
    fig = figures.plot_ablation(losses, ABLATION_FRS, title)
    figures.save_figure(fig, out_png, out_pdf)


def run_calibration(exits: Sequence[Path], settings: dict, out_png: Path, out_pdf: Path) -> None:
    """Exit-conditional ECE per branch at margins 0.05, 0.2 and 0.4."""
    settings = _check_settings(settings)
    runs = [load_run(p, settings["exit_signals"]) for p in exits]
    panels, used = [], []
    for wanted in ECE_MARGINS:
        margin, note = pick_margin(settings["margins"], wanted)
        panels.append((margin, f"m = {margin:g}{note}"))
        used.append(margin)
    ece = ece_table(runs, sorted(set(used)))
    title = f"Exit-conditional calibration: {_where(exits)} ({len(runs)} runs)"
    fig = figures.plot_calibration(ece, panels, settings["recipes"], title)
    figures.save_figure(fig, out_png, out_pdf)


def run_shift(
    exits: Sequence[Path], prepared: Path, settings: dict, out_png: Path, out_pdf: Path
) -> None:
    """KL, Gini and top-3 share of the samples reaching each exit at m = 0.2."""
    settings = _check_settings(settings)
    runs = [load_run(p, settings["exit_signals"], with_signals=False) for p in exits]
    margin, note = pick_margin(settings["margins"], SHIFT_MARGIN)
    num_classes = len(class_names(prepared))
    shift = shift_table(runs, margin, num_classes)
    positions = figures.exit_labels(runs[0]["num_branches"])
    title = f"Covariate shift at m = {margin:g}{note}: {_where(exits)}"
    fig = figures.plot_shift(shift, positions, settings["recipes"], num_classes, title)
    figures.save_figure(fig, out_png, out_pdf)


def run_flow(
    exits: Sequence[Path], prepared: Path, settings: dict, out_png: Path, out_pdf: Path
) -> None:
    """Per class, where its test samples leave the cascade at m = 0.2."""
    settings = _check_settings(settings)
    runs = [load_run(p, settings["exit_signals"], with_signals=False) for p in exits]
    margin, note = pick_margin(settings["margins"], SHIFT_MARGIN)
    names = class_names(prepared)
    flow = flow_table(runs, margin, len(names))
    title = f"Sample flow per class at m = {margin:g}{note}: {_where(exits)}"
    fig = figures.plot_flow(flow, settings["recipes"], names, title)
    figures.save_figure(fig, out_png, out_pdf)


def run_exemplars(
    exits: Path, prepared: Path, features: Path, settings: dict, out_png: Path, out_pdf: Path
) -> None:
    """Near-threshold and deep-above-threshold correct exits of each branch, at m = 0.2."""
    settings = _check_settings(settings)
    run = load_run(exits, settings["exit_signals"])
    margin, note = pick_margin(settings["margins"], SHIFT_MARGIN)
    images = test_images(prepared, features)
    names = class_names(prepared)
    cells = exemplar_cells(run, images, names, margin, EXEMPLARS_PER_KIND)
    title = (
        f"Correct exits of {run['recipe']} (seed {run['seed']}) at m = {margin:g}{note}: "
        f"{_where([exits])}"
    )
    if all(cell is None for row in cells for cell in row):
        fig = figures.note_figure("no branch released a correctly classified sample", title)
    else:
        groups = ["near the threshold", "deep above the threshold"]
        fig = figures.plot_exemplars(cells, groups, title)
    figures.save_figure(fig, out_png, out_pdf)


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface: one subcommand per figure family."""
    p = argparse.ArgumentParser(prog="python -m calex_steps.make_figures", description=__doc__)
    sub = p.add_subparsers(dest="figure", required=True)
    for name in ("pareto", "ablation", "calibration", "shift", "flow", "exemplars"):
        s = sub.add_parser(name)
        if name in ("pareto", "ablation"):
            s.add_argument("--sweeps", type=Path, nargs="+", required=True)
        else:
            s.add_argument("--exits", type=Path, nargs="+", required=True)
        if name in ("shift", "flow", "exemplars"):
            s.add_argument("--prepared", type=Path, required=True, help="prepared.h5")
        if name == "exemplars":
            s.add_argument("--features", type=Path, required=True, help="features.h5")
        s.add_argument("--settings", required=True, help="JSON: recipes, margins, exit_signals")
        s.add_argument("--out-png", type=Path, required=True)
        s.add_argument("--out-pdf", type=Path, required=True)
    return p


def _main(argv) -> None:
    """Parse the arguments and draw the requested figure."""
    args = build_parser().parse_args(argv)
    log = setup_logging()
    settings = parse_json_arg(args.settings)
    out = (args.out_png, args.out_pdf)
    if args.figure == "pareto":
        run_pareto(args.sweeps, settings, *out)
    elif args.figure == "ablation":
        run_ablation(args.sweeps, settings, *out)
    elif args.figure == "calibration":
        run_calibration(args.exits, settings, *out)
    elif args.figure == "shift":
        run_shift(args.exits, args.prepared, settings, *out)
    elif args.figure == "flow":
        run_flow(args.exits, args.prepared, settings, *out)
    else:
        if len(args.exits) != 1:
            raise CalexError("exemplars show one run: pass a single --exits file")
        run_exemplars(args.exits[0], args.prepared, args.features, settings, *out)
    log.info("wrote %s and %s", *out)


def main(argv=None) -> int:
    """Entry point: returns 0 on success, 1 on a CalexError (printed as one line)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
