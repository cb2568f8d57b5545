"""Reading the runs a figure shows: exits, thresholds, exit signals, images; shared helpers
of the plot stages (settings, margins, titles, the command line)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from calex_steps.cli import parse_json_arg, stage_main, stage_parser
from calex_steps.errors import CalexError
from calex_steps.reporting.figures.style import exit_labels
from calex_steps.reporting.runfiles import RERUN, parse_run_path

RUN_ARRAYS = ("margins", "exit_branch", "final_pred", "labels")
SETTINGS_KEYS = ("recipes", "margins", "exit_signals", "backbone", "lr_batch_size")
SETTINGS = ("study", "sweep", "latency", "$defs.stage_inputs")
"""Where those keys come from in the configuration schema (calex_steps/schema.py)."""


def check_settings(settings: dict) -> dict:
    """Reject unknown keys; default the margins to the paper's and the signals to branches.

    ``backbone`` names the backbone a figure drawn from a dataset-wide table
    shows; ``lr_batch_size`` the batch size the sweep predicted latencies at.
    """
    unknown = sorted(set(settings) - set(SETTINGS_KEYS))
    if unknown or "recipes" not in settings:
        raise CalexError(
            f"--settings takes the keys {list(SETTINGS_KEYS)} (recipes required); got "
            f"{sorted(settings)}"
        )
    return {"margins": [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8], "exit_signals": {}, **settings}


def pick_margin(margins: Sequence[float], wanted: float) -> tuple[float, str]:
    """The configured margin nearest ``wanted`` and a title note when it is not ``wanted``."""
    if not margins:
        raise CalexError("the sweep has no margins; set sweep.margins in the configuration")
    margin = float(min(margins, key=lambda m: (abs(m - wanted), m)))
    note = "" if np.isclose(margin, wanted) else f" (nearest configured to {wanted:g})"
    return margin, note


def load_run(exits: Path, exit_signals: dict, with_signals: bool = True) -> dict:
    """One run's test exits, thresholds and (optionally) its branches' exit signals.

    Reads ``exits.npz`` and ``thresholds.npz`` from the split folder of
    ``exits`` and ``branch{l}.npz`` (or ``ztw_ensemble{l}.npz`` for a recipe
    whose exit signal is the ensemble) from its run folder; the signals are
    those of the split's test part (``test_index`` into the pool [val; test]).

    Returns:
        dict with ``recipe``, ``seed``, ``margins`` (M,), ``exit_branch`` (M, N),
        ``final_pred`` (M, N), ``labels`` (N,), ``thresholds`` (margin key ->
        (L, C)), ``num_branches`` (L, read from the thresholds: each recipe has its
        own), ``exit_cost`` ((L+1,): the MACs a sample leaving at each exit position
        has paid, as a share of the backbone's) and, with signals, ``conf``/``pred``
        (lists of (N,)).
    """
    exits = Path(exits)
    info = parse_run_path(exits)
    folder = exits.parent
    run_folder = folder.parent if folder.name.startswith("split") else folder
    for path in (exits, folder / "thresholds.npz"):
        if not path.is_file():
            raise CalexError(f"{path} does not exist; run sweep_margins first")
    with np.load(exits) as data:
        missing = [k for k in (*RUN_ARRAYS, "costs", "total_macs") if k not in data.files]
        if missing:
            raise CalexError(f"{exits} is of an older format (it lacks {missing}); {RERUN}")
        run = {**info, **{k: data[k] for k in RUN_ARRAYS}}
        run["exit_cost"] = data["costs"].astype(np.float64) / float(data["total_macs"])
        test_index = data["test_index"] if "test_index" in data.files else None
    with np.load(folder / "thresholds.npz") as data:
        run["thresholds"] = {k: data[k] for k in data.files if k.startswith("m")}
    run["num_branches"] = int(next(iter(run["thresholds"].values())).shape[0])
    exits_seen = int(np.max(run["exit_branch"], initial=0))
    if run["exit_cost"].shape != (run["num_branches"] + 1,) or exits_seen > run["num_branches"]:
        raise CalexError(
            f"{exits} has {run['exit_cost'].size - 1} branch exits but {folder}/thresholds.npz "
            f"thresholds {run['num_branches']}; {RERUN}"
        )
    if with_signals:
        stem = "ztw_ensemble" if exit_signals.get(info["recipe"]) == "ztw_ensemble" else "branch"
        run["conf"], run["pred"] = [], []
        for number in range(1, run["num_branches"] + 1):
            path = run_folder / f"{stem}{number}.npz"
            if not path.is_file():
                raise CalexError(f"{path} does not exist; run the branch training of this recipe")
            with np.load(path) as data:
                conf, pred = (data[f"test_{k}"] for k in ("conf", "pred"))
                if test_index is not None:
                    conf = np.concatenate([data["val_conf"], conf])[test_index]
                    pred = np.concatenate([data["val_pred"], pred])[test_index]
            run["conf"].append(conf.astype(np.float64))
            run["pred"].append(pred.astype(np.int64))
    return run


def exits_per_recipe(runs: Sequence[dict]) -> dict[str, int]:
    """The number of branch exits of each recipe (recipes of one study may differ); every
    run of one recipe must have the same, else its files come from two configurations."""
    counts: dict[str, int] = {}
    for run in runs:
        count = counts.setdefault(run["recipe"], run["num_branches"])
        if count != run["num_branches"]:
            raise CalexError(
                f"{run['recipe']} has runs with {count} and {run['num_branches']} exits: its "
                "sweep files come from two configurations; rerun sweep_margins for all its runs"
            )
    return counts


def exit_rows(run: dict) -> list[tuple[int, str, float]]:
    """(exit number 1..L+1, name B1..BL or backbone, cost share) of each exit of a run."""
    names = exit_labels(run["num_branches"])
    return [(p + 1, name, float(run["exit_cost"][p])) for p, name in enumerate(names)]


def margin_row(run: dict, margin: float) -> int:
    """Row of ``margin`` in a run's exits; CalexError when the sweep did not run it."""
    hits = np.flatnonzero(np.isclose(run["margins"], margin))
    if hits.size == 0:
        raise CalexError(
            f"{run['recipe']} seed {run['seed']} has no margin {margin:g}; rerun sweep_margins"
        )
    return int(hits[0])


def read_test_images(prepared: Path, features: Path) -> np.ndarray:
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


def mean_std(frame: pd.DataFrame, keys: list[str], stats: Sequence[str]) -> pd.DataFrame:
    """Mean and std over seeds of each statistic, as ``{stat}_mean`` and ``{stat}_std``."""
    grouped = frame.groupby(keys, sort=False)
    named = {}
    for stat in stats:
        named[f"{stat}_mean"] = (stat, "mean")
        named[f"{stat}_std"] = (stat, "std")
    return grouped.agg(**named).reset_index()


def where(paths: Sequence[Path]) -> str:
    """'dataset, backbone' of a set of run files, which must agree."""
    runs = {(i["dataset"], i["backbone"]) for i in map(parse_run_path, paths)}
    if len(runs) != 1:
        raise CalexError(f"a figure shows one dataset and backbone; the inputs span {sorted(runs)}")
    return ", ".join(runs.pop())


def seeds_note(frame: pd.DataFrame) -> str:
    """'1 seed' or 'mean ± std over N seeds'."""
    n = frame["seed"].nunique()
    return "1 seed" if n == 1 else f"mean ± std over {n} seeds"


def runs_at_margin(exits: Sequence[Path], settings: dict, wanted: float, with_signals=False):
    """(checked settings, the runs of ``exits``, the configured margin nearest ``wanted``,
    the title note saying so when it is not ``wanted``)."""
    settings = check_settings(settings)
    runs = [load_run(p, settings["exit_signals"], with_signals=with_signals) for p in exits]
    margin, note = pick_margin(settings["margins"], wanted)
    return settings, runs, margin, note


FIGURE_HELP = """
--settings holds `recipes` (legend order), `margins` (the paper's grid, within
the sweep's frontier), `exit_signals` (recipe -> `branch` or `ztw_ensemble`:
which files beside exits.npz hold the confidences the thresholds act on) and,
where a figure needs them, `backbone` (the one a dataset-wide table is drawn
for) and `lr_batch_size` (the batch size latencies were predicted at). A
margin a figure asks for but the sweep lacks is replaced by the nearest
configured one, and the title says so. Writes one PNG and one PDF.
"""


def figure_stage(figure: str, doc: str | None, run, inputs: str, *extra: str, optional=()):
    """``(build_parser, main)`` of the stage ``plot_<figure>``.

    Its command line: ``--<inputs>`` (``frontiers``, ``tables`` or ``exits``,
    several files), one file per ``extra`` name (``prepared``, ``features``),
    ``--settings``, ``--out-png``, ``--out-pdf`` and, for each ``optional`` name
    (``segments``), zero or more files; ``main`` calls ``run(inputs, *extra,
    settings, out_png, out_pdf, **optional)``.
    """
    helps = {"prepared": "prepared.h5", "features": "features.h5",
             "segments": "latency/segments.json (optional)"}  # fmt: skip

    def build_parser():
        p = stage_parser(f"plot_{figure}", (doc or "") + FIGURE_HELP)
        p.add_argument(f"--{inputs}", type=Path, nargs="+", required=True)
        for name in extra:
            p.add_argument(f"--{name}", type=Path, required=True, help=helps[name])
        for name in optional:
            p.add_argument(f"--{name}", type=Path, nargs="*", default=[], help=helps[name])
        p.add_argument("--settings", required=True, help="JSON: recipes, margins, exit_signals")
        p.add_argument("--out-png", type=Path, required=True)
        p.add_argument("--out-pdf", type=Path, required=True)
        return p

    def main(argv=None) -> int:
        """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

        def body(a) -> None:
            files = [getattr(a, inputs), *(getattr(a, name) for name in extra)]
            more = {name: getattr(a, name) for name in optional}
            run(*files, parse_json_arg(a.settings, schema=SETTINGS), a.out_png, a.out_pdf, **more)
            logging.getLogger("calex").info("wrote %s and %s", a.out_png, a.out_pdf)

        return stage_main(build_parser, body, argv)

    return build_parser, main
