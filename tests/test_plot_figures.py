"""Figure data (ECE, shift, flow, exemplars) and the figures themselves, on tiny runs."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from calex_steps.errors import CalexError
from calex_steps.reporting.figures.ablation import plot_ablation as plot_ablation_figure
from calex_steps.reporting.figures.calibration import ece_table
from calex_steps.reporting.figures.calibration import plot_calibration as plot_calibration_figure
from calex_steps.reporting.figures.exemplars import exemplar_cells, exemplar_row_labels
from calex_steps.reporting.figures.exemplars import plot_exemplars as plot_exemplars_figure
from calex_steps.reporting.figures.flow import flow_table
from calex_steps.reporting.figures.flow import plot_flow as plot_flow_figure
from calex_steps.reporting.figures.pareto import pareto_points
from calex_steps.reporting.figures.pareto import plot_pareto as plot_pareto_figure
from calex_steps.reporting.figures.runs import load_run, pick_margin, read_test_images
from calex_steps.reporting.figures.shift import plot_shift as plot_shift_figure
from calex_steps.reporting.figures.shift import shift_table
from calex_steps.reporting.figures.style import RECIPE_COLORS, exit_color, recipe_color
from calex_steps.stages import (
    plot_ablation,
    plot_calibration,
    plot_exemplars,
    plot_flow,
    plot_pareto,
    plot_shift,
)

MARGINS = [0.1, 0.2, 0.4]
NUM_CLASSES, NUM_BRANCHES, N = 4, 3, 40
SETTINGS = {"recipes": ["calexnet", "noalign", "align_only"], "margins": MARGINS}


def depths(branches: int) -> np.ndarray:
    """Share of the backbone's MACs paid at each exit of a synthetic ``branches``-exit
    cascade: evenly spread branches, the backbone (plus every head) at 1.05."""
    return np.r_[np.arange(1, branches + 1) / (branches + 1), 1.05]


def write_run(root, recipe, seed, rng, branches=NUM_BRANCHES):
    """frontier.csv, exits.npz, thresholds.npz and branch files of one synthetic run with
    ``branches`` exits (exits.npz as the sweep writes it: int8 exit positions, MAC costs)."""
    folder = root / "syn" / "r18" / recipe / f"seed{seed}"
    folder.mkdir(parents=True)
    fr = np.array([0.3, 0.45, 0.6]) + 0.02 * seed
    frontier = {"margin": MARGINS, "accuracy": [0.86, 0.8, 0.68], "fr": fr, "lr": fr - 0.1,
                "backbone_accuracy": 0.9}  # fmt: skip
    pd.DataFrame(frontier).to_csv(folder / "frontier.csv", index=False)
    labels = np.arange(N) % NUM_CLASSES
    exit_branch = rng.integers(0, branches + 1, size=(len(MARGINS), N)).astype(np.int8)
    np.savez(folder / "exits.npz", margins=np.array(MARGINS), exit_branch=exit_branch,
             final_pred=np.tile(labels, (len(MARGINS), 1)), labels=labels,
             costs=2000.0 * depths(branches), total_macs=np.float64(2000.0))  # fmt: skip
    np.savez(folder / "thresholds.npz",
             **{f"m{m:g}": np.full((branches, NUM_CLASSES), 0.5) for m in MARGINS})  # fmt: skip
    for b in range(1, branches + 1):
        pred = np.where(rng.random(N) < 0.8, labels, (labels + 1) % NUM_CLASSES)
        np.savez(folder / f"branch{b}.npz", test_pred=pred,
                 test_conf=rng.uniform(0.5, 1.0, N).astype(np.float32))  # fmt: skip
    return folder


def write_images(root, rng):
    """prepared.h5 (class names, test images) and features.h5 (test index) of the runs."""
    names = [f"class{c}" for c in range(NUM_CLASSES)]
    with h5py.File(root / "prepared.h5", "w") as f:
        f.attrs["class_names"] = json.dumps(names)
        f.create_dataset("test/images", data=rng.integers(0, 255, (N, 32, 32, 3), dtype=np.uint8))
        f.create_dataset("test/index", data=np.arange(N))
    with h5py.File(root / "features.h5", "w") as f:
        f.create_dataset("test/index", data=np.arange(N))


@pytest.fixture
def runs(tmp_path):
    """Two seeds of three recipes (kd_only not run), plus prepared.h5 and features.h5."""
    rng = np.random.default_rng(0)
    folders = [write_run(tmp_path, r, s, rng) for r in SETTINGS["recipes"] for s in (0, 1)]
    write_images(tmp_path, rng)
    return tmp_path, folders


def assert_figure_files(png, pdf):
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


@pytest.mark.parametrize(
    "name", ["pareto", "ablation", "calibration", "shift", "flow", "exemplars"]
)
def test_every_figure_is_written_with_several_seeds(runs, name):
    root, folders = runs
    frontiers = [f / "frontier.csv" for f in folders]
    table = write_loss_table(root / "loss_at_fr.csv", SETTINGS["recipes"])
    exits = [f / "exits.npz" for f in folders]
    prepared, features = root / "prepared.h5", root / "features.h5"
    files = (root / "figs" / f"{name}.png", root / "figs" / f"{name}.pdf")
    calls = {
        "pareto": lambda: plot_pareto.run_plot_pareto(frontiers, SETTINGS, *files),
        "ablation": lambda: plot_ablation.run_plot_ablation([table], ABLATION, *files),
        "calibration": lambda: plot_calibration.run_plot_calibration(exits, SETTINGS, *files),
        "shift": lambda: plot_shift.run_plot_shift(exits, prepared, SETTINGS, *files),
        "flow": lambda: plot_flow.run_plot_flow(exits, prepared, SETTINGS, *files),
        "exemplars": lambda: plot_exemplars.run_plot_exemplars(
            exits[0], prepared, features, SETTINGS, *files
        ),
    }
    calls[name]()
    assert_figure_files(*files)


def write_loss_table(path, recipes, mean=2.0, status="measured"):
    """A loss_at_fr.csv of backbone r18 as make_tables writes it (the columns the figure reads)."""
    rows = [{"dataset": "syn", "backbone": "r18", "recipe": r, "fr_target": t, "mean": mean,
             "ci_lo": mean - 0.5, "ci_hi": mean + 0.5, "status": status, "runs": 2}
            for r in recipes for t in (0.4, 0.5, 0.6)]  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


ABLATION = {**SETTINGS, "backbone": "r18"}


def test_ablation_with_a_recipe_better_than_the_backbone_or_extrapolated(tmp_path):
    # Loss below zero in every cell must still draw (the colour scale starts below 0), and so
    # must a grid whose every cell is extrapolated (no colour at all).
    for status in ("measured", "extrapolated"):
        table = write_loss_table(tmp_path / f"{status}.csv", ["noalign"], -1.5, status)
        files = (tmp_path / f"{status}.png", tmp_path / f"{status}.pdf")
        plot_ablation.run_plot_ablation([table], ABLATION, *files)
        assert_figure_files(*files)
    with pytest.raises(CalexError, match="no rows of backbone r50"):
        plot_ablation.run_plot_ablation([table], {**ABLATION, "backbone": "r50"}, *files)


def test_ablation_cells_carry_the_table_interval_and_marks():
    losses = pd.DataFrame({"recipe": ["noalign", "calexnet", "kd_only"], "fr_target": 0.4,
                           "mean": [3.0, 1.5, np.nan], "ci_lo": [2.5, 1.0, np.nan],
                           "ci_hi": [3.5, 2.1, np.nan],
                           "status": ["measured", "extrapolated", "missing"]})  # fmt: skip
    fig = plot_ablation_figure(losses, [0.4, 0.6], "t")
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert "noalign\n3.0 [2.5, 3.5]" in texts and "calexnet\n1.5 [1.0, 2.1]†" in texts
    assert "kd_only\n—  (FR not reached)" in texts and "align_only\nnot run" in texts
    # FR 0.6 is not in the table (report.fr_targets left it out): the panel says so.
    assert "noalign\nFR not tabulated\n(report.fr_targets)" in {
        t.get_text() for t in fig.axes[1].texts
    }


def test_pareto_draws_the_lr_view_only_when_latency_was_measured(runs):
    root, folders = runs
    frame = pd.concat([pd.read_csv(f / "frontier.csv").assign(recipe=f.parts[-2]) for f in folders])
    points = pareto_points(frame.assign(seed=0, split=0), MARGINS[:2])
    fig = plot_pareto_figure(points, 0.9, SETTINGS["recipes"], "t", "cpu, batch 256, 2 threads")
    assert len(fig.axes) == 2 and "cpu, batch 256, 2 threads" in fig.axes[1].get_title()
    # Markers sit at the paper's margins only (two of the three here), for every recipe.
    markers = [line for line in fig.axes[0].lines if line.get_marker() == "o"]
    assert [len(line.get_xdata()) for line in markers] == [2, 2, 2]
    unmeasured = plot_pareto_figure(points.assign(lr_mean=np.nan), 0.9, SETTINGS["recipes"], "t")
    assert len(unmeasured.axes) == 1 and "not measured" in unmeasured.axes[0].get_title()


def test_pick_margin_uses_the_nearest_and_says_so():
    assert pick_margin([0.1, 0.2, 0.4], 0.2) == (0.2, "")
    margin, note = pick_margin([0.1, 0.2, 0.4], 0.05)
    assert margin == 0.1 and "nearest configured to 0.05" in note


def run_dict(exit_branch, labels, conf, pred, thresholds, recipe="calexnet", seed=0):
    """An in-memory run as ``load_run`` returns it, at a single margin 0.2."""
    return {"recipe": recipe, "seed": seed, "margins": np.array([0.2]),
            "exit_branch": np.array([exit_branch]), "labels": np.array(labels),
            "thresholds": {"m0.2": np.array(thresholds)}, "num_branches": len(thresholds),
            "exit_cost": depths(len(thresholds)),
            "conf": [np.array(c, dtype=float) for c in conf],
            "pred": [np.array(p) for p in pred]}  # fmt: skip


def test_ece_counts_only_the_samples_that_exited_there():
    # Branch 1 releases samples 0 and 1; its lowest threshold 0.6 starts the bins (width 0.04).
    run = run_dict([0, 0, 1, 1], [0, 1, 0, 1], [[0.7, 0.9, 0.99, 0.99], [0.2, 0.2, 0.8, 0.9]],
                   [[0, 0, 1, 1], [0, 1, 1, 1]], [[0.6, 0.8], [0.5, 0.5]])  # fmt: skip
    table = ece_table([run], [0.2]).set_index("position")
    # Sample 0 correct at 0.7, sample 1 wrong at 0.9, different bins: (0.3 + 0.9) / 2.
    assert table.loc["B1", "ece_mean"] == pytest.approx(0.6)
    # Branch 2: samples 2 (wrong, 0.8) and 3 (right, 0.9), bins of width 0.05 from 0.5.
    assert table.loc["B2", "ece_mean"] == pytest.approx((0.8 + 0.1) / 2)
    assert table.loc["B2", "n_mean"] == 2
    with pytest.raises(CalexError, match="no margin 0.4"):
        ece_table([run], [0.4])


def test_shift_and_flow_tables_by_hand():
    # Four samples of classes 0, 0, 1, 2; one branch; B1 releases the two of class 0.
    run = run_dict([0, 0, 1, 1], [0, 0, 1, 2], [[0.9] * 4], [[0, 0, 1, 2]], [[0.5, 0.5, 0.5]])
    shift = shift_table([run], 0.2, 3).set_index("position")
    assert shift.loc["B1", "kl_mean"] == pytest.approx(0.0, abs=0.01)  # everyone reaches B1
    full = np.array([0.5, 0.25, 0.25])
    survivors = np.array([0.5, 1.5, 1.5]) / 3.5  # counts 0, 1, 1 plus half a sample each
    assert shift.loc["backbone", "kl_mean"] == pytest.approx(
        np.sum(full * np.log(full / survivors))
    )
    assert shift.loc["backbone", "gini_mean"] == pytest.approx(
        1 / 3
    )  # counts 0, 1, 1: 4 / (2 · 9 · 2/3)
    assert shift.loc["backbone", "top3_mean"] == 1.0
    flow = flow_table([run], 0.2, 3).set_index(["class", "position"])["share"]
    assert flow[(0, "B1")] == 1.0 and flow[(1, "backbone")] == 1.0 and flow[(2, "B1")] == 0.0


def test_exemplars_pick_near_and_deep_correct_exits():
    conf = [0.55, 0.95, 0.7, 0.99, 0.6, 0.8]
    run = run_dict([0] * 6, [0, 0, 0, 0, 1, 1], [conf], [[0, 0, 0, 1, 1, 1]], [[0.5, 0.5]])
    images = np.zeros((6, 32, 32, 3), dtype=np.uint8)
    cells = exemplar_cells(run, images, ["a", "b"], 0.2, k=2)
    # Correct exits: 0 (0.55), 1 (0.95), 2 (0.7), 4 (0.6), 5 (0.8); sample 3 is wrong.
    captions = [c["caption"].split("\n")[1] for c in cells[0]]
    assert captions == ["R=0.55 T=0.50", "R=0.60 T=0.50", "R=0.95 T=0.50", "R=0.80 T=0.50"]


def test_test_images_must_align_with_the_cache(runs):
    root, _ = runs
    with h5py.File(root / "features.h5", "a") as f:
        f["test/index"][0] = 99
    with pytest.raises(CalexError, match="rerun cache_features"):
        read_test_images(root / "prepared.h5", root / "features.h5")


def test_recipe_colours_are_fixed_and_distinct():
    assert recipe_color("calexnet") == RECIPE_COLORS["calexnet"]
    assert len(set(RECIPE_COLORS.values())) == len(RECIPE_COLORS)
    assert recipe_color("new_a", ["new_a", "new_b"]) != recipe_color("new_b", ["new_a", "new_b"])
    # the real-data study's fifteen recipes: fifteen colours, none repeated
    config = Path(__file__).resolve().parents[1] / "config" / "cifar10_resnet56.yaml"
    study = yaml.safe_load(config.read_text())["study"]["recipes"]
    assert len(study) == 15
    assert len({recipe_color(r, study) for r in study}) == len(study)
    # a study crossing heads, exit placements and recipes: the seven fixed ones and 24 more
    crossed = [*RECIPE_COLORS, *(f"{r}_{h}{e}" for r in ("noalign", "calexnet", "msp_global")
                                 for h in ("augmented", "sdn") for e in (3, 6)),
               *(f"baseline{i}" for i in range(12))]  # fmt: skip
    assert len({recipe_color(r, crossed) for r in crossed}) == len(crossed) == 31


def test_settings_with_an_unknown_key_fail(runs):
    root, folders = runs
    with pytest.raises(CalexError, match="exit_signals"):
        settings = {"recipes": [], "colour": 1}
        plot_pareto.run_plot_pareto(
            [folders[0] / "frontier.csv"], settings, root / "a.png", root / "a.pdf"
        )


def test_pareto_draws_the_frontier_means_through_the_anchor():
    # Two runs of one recipe at three margins: the figure draws, on each axis, the mean
    # over runs of the reduction against the mean accuracy, from the anchor (0, backbone).
    rows = {"margin": [0.1, 0.2, 0.4] * 2, "fr": [0.3, 0.45, 0.6, 0.32, 0.47, 0.62],
            "accuracy": [0.86, 0.80, 0.66, 0.88, 0.78, 0.70],
            "seed": [0] * 3 + [1] * 3}  # fmt: skip
    frame = pd.DataFrame(rows).assign(recipe="calexnet", split=0)
    frame["lr"] = frame["fr"] - 0.1
    fig = plot_pareto_figure(pareto_points(frame, [0.1, 0.2]), 0.9, ["calexnet"], "t", "cpu")
    color = recipe_color("calexnet", ["calexnet"])
    means = {"fr": [0.31, 0.46, 0.61], "lr": [0.21, 0.36, 0.51]}
    accuracy = [0.87, 0.79, 0.68]
    for ax, axis in zip(fig.axes[:2], ("fr", "lr"), strict=True):
        mine = [line for line in ax.lines if line.get_color() == color]
        curve = [(x, y) for line in mine if line.get_marker() in ("None", "")
                 for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)]  # fmt: skip
        x = means[axis]
        # the 0.70 floor is crossed between the last two points: the curve is cut there
        crossing = x[1] + (0.70 - 0.79) / (0.68 - 0.79) * (x[2] - x[1])
        want = [(0.0, 0.9), *zip(x, accuracy, strict=True), (crossing, 0.70)]
        np.testing.assert_allclose(sorted(set(curve)), sorted(want), atol=1e-12)
        dots = [line for line in mine if line.get_marker() == "o"][0]  # the paper's margins
        np.testing.assert_allclose(dots.get_xdata(), x[:2])
        np.testing.assert_allclose(dots.get_ydata(), accuracy[:2])


# Recipes of one study may have different numbers of exits (each recipe its own
# placement): every figure reads them per run, never assumes three.
LAYOUTS = {
    "one exit": {"noalign": 1},
    "six exits": {"sdn": 6},
    "one, three and six exits": {"calexnet": 3, "sdn": 6, "noalign": 1},
}


@pytest.fixture(params=list(LAYOUTS))
def study(request, tmp_path):
    """(layout recipe -> number of exits, run folders, loaded runs) of two seeds per recipe."""
    layout = LAYOUTS[request.param]
    rng = np.random.default_rng(7)
    folders = [write_run(tmp_path, r, s, rng, b) for r, b in layout.items() for s in (0, 1)]
    write_images(tmp_path, rng)
    runs = [load_run(f / "exits.npz", {}) for f in folders]
    return layout, folders, runs


def hand_counts(runs, recipe, margin_row_index=1):
    """Per seed of ``recipe``: its (exit position (N,), labels (N,)) at margin 0.2."""
    return [(r["exit_branch"][margin_row_index].astype(int), r["labels"]) for r in runs
            if r["recipe"] == recipe]  # fmt: skip


def test_flow_table_has_each_recipes_own_exits_and_shares(study):
    layout, _, runs = study
    flow = flow_table(runs, 0.2, NUM_CLASSES)
    for recipe, count in layout.items():
        part = flow[flow["recipe"] == recipe]
        assert len(part) == (count + 1) * NUM_CLASSES and (part["exits"] == count).all()
        exits = part.drop_duplicates("exit").sort_values("exit")
        assert exits["exit"].tolist() == list(range(1, count + 2))
        assert exits["position"].tolist() == [f"B{b}" for b in range(1, count + 1)] + ["backbone"]
        np.testing.assert_allclose(exits["cost"], depths(count))
        shares = part.set_index(["class", "exit"])["share"]
        for c in range(NUM_CLASSES):
            for e in range(1, count + 2):
                expected = np.mean([np.sum((pos == e - 1) & (lab == c)) / np.sum(lab == c)
                                    for pos, lab in hand_counts(runs, recipe)])  # fmt: skip
                assert shares[(c, e)] == pytest.approx(expected)
            assert shares.loc[c].sum() == pytest.approx(1.0)


def test_shift_table_has_one_row_per_exit_of_each_recipe(study):
    layout, _, runs = study
    shift = shift_table(runs, 0.2, NUM_CLASSES)
    for recipe, count in layout.items():
        part = shift[shift["recipe"] == recipe].set_index("exit")
        assert part.index.tolist() == list(range(1, count + 2))
        np.testing.assert_allclose(part["cost"], depths(count))
        # Everyone reaches B1 (KL 0, balanced classes); at exit e, those not released before.
        assert part.loc[1, "kl_mean"] == pytest.approx(0.0, abs=1e-12)
        for e in range(1, count + 2):
            top3 = []
            for pos, lab in hand_counts(runs, recipe):
                counts = np.bincount(lab[pos >= e - 1], minlength=NUM_CLASSES)
                top3.append(np.sort(counts)[-3:].sum() / counts.sum())
            assert part.loc[e, "top3_mean"] == pytest.approx(np.mean(top3))


def test_ece_table_has_one_row_per_branch_of_each_recipe(study):
    layout, _, runs = study
    ece = ece_table(runs, [0.2, 0.4])
    for recipe, count in layout.items():
        part = ece[(ece["recipe"] == recipe) & (ece["margin"] == 0.2)].set_index("exit")
        assert part.index.tolist() == list(range(1, count + 1))
        assert part["position"].tolist() == [f"B{b}" for b in range(1, count + 1)]
        exited = [[np.sum(pos == b) for b in range(count)] for pos, _ in hand_counts(runs, recipe)]
        np.testing.assert_allclose(part["n_mean"], np.mean(exited, axis=0))


def test_figures_draw_each_recipes_exits(study):
    layout, _, runs = study
    recipes = list(layout)
    flow = plot_flow_figure(flow_table(runs, 0.2, NUM_CLASSES), recipes, list("abcd"), "t")
    for ax, (recipe, count) in zip(flow.axes, layout.items(), strict=False):
        # One stacked bar series per exit, the backbone last, coloured by depth.
        assert len(ax.containers) == count + 1
        depth = ", ".join(f"{100 * d:.0f}" for d in depths(count)[:-1])
        plural = "s" * (count > 1)
        assert ax.get_title() == f"{recipe}\n{count} exit{plural} at {depth} % of the MACs"
        colors = [c.patches[0].get_facecolor() for c in ax.containers]
        assert colors[-1] == exit_color(1.0, backbone=True)
        assert colors[0] == exit_color(depths(count)[0])
    shift = plot_shift_figure(shift_table(runs, 0.2, NUM_CLASSES), recipes, NUM_CLASSES, "t")
    lines = [line for line in shift.axes[0].lines if line.get_marker() == "o"]
    # One line per recipe through its exits at their depth (offsets keep whiskers apart).
    assert [len(line.get_xdata()) for line in lines] == [c + 1 for c in layout.values()]
    for line, count in zip(lines, layout.values(), strict=True):
        np.testing.assert_allclose(line.get_xdata(), depths(count), atol=0.01)
    ece = ece_table(runs, [0.2])
    calibration = plot_calibration_figure(ece, [(0.2, "m = 0.2")], recipes, "t")
    counts = sorted(set(layout.values()))
    assert len(calibration.axes) == len(counts)  # one row per number of exits
    for ax, count in zip(calibration.axes, counts, strict=True):
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks == [f"B{b}\n{100 * d:.0f} %" for b, d in enumerate(depths(count)[:-1], 1)]
        assert len(counts) == 1 or ax.get_ylabel().startswith(f"recipes with {count} exit")


def test_exemplars_have_one_row_per_branch(study):
    layout, _, runs = study
    run = runs[-1]
    count = layout[run["recipe"]]
    cells = exemplar_cells(run, np.zeros((N, 32, 32, 3), np.uint8), list("abcd"), 0.2, k=2)
    labels = exemplar_row_labels(run)
    assert len(cells) == count and all(len(row) == 4 for row in cells)
    assert labels == [f"B{b} ({100 * d:.0f} %)" for b, d in enumerate(depths(count)[:-1], 1)]
    fig = plot_exemplars_figure(cells, ["near", "deep"], "t", labels)
    assert len(fig.axes) == 4 * count
    assert [fig.axes[4 * r].get_ylabel() for r in range(count)] == labels


def test_every_exit_figure_is_written_for_recipes_with_different_exits(tmp_path):
    layout = LAYOUTS["one, three and six exits"]
    rng = np.random.default_rng(3)
    folders = [write_run(tmp_path, r, s, rng, b) for r, b in layout.items() for s in (0, 1)]
    write_images(tmp_path, rng)
    exits = [f / "exits.npz" for f in folders]
    six = next(p for p in exits if p.parts[-3] == "sdn")
    prepared, features = tmp_path / "prepared.h5", tmp_path / "features.h5"
    settings = {"recipes": list(layout), "margins": MARGINS}
    for name, call in (
        ("calibration", lambda f: plot_calibration.run_plot_calibration(exits, settings, *f)),
        ("shift", lambda f: plot_shift.run_plot_shift(exits, prepared, settings, *f)),
        ("flow", lambda f: plot_flow.run_plot_flow(exits, prepared, settings, *f)),
        ("exemplars", lambda f: plot_exemplars.run_plot_exemplars(
            six, prepared, features, settings, *f)),
    ):  # fmt: skip
        files = (tmp_path / f"{name}.png", tmp_path / f"{name}.pdf")
        call(files)
        assert_figure_files(*files)


def test_runs_of_one_recipe_must_agree_on_their_exits(tmp_path):
    rng = np.random.default_rng(0)
    three = write_run(tmp_path, "sdn", 0, rng, branches=3)
    six = write_run(tmp_path, "sdn", 1, rng, branches=6)
    runs = [load_run(f / "exits.npz", {}) for f in (three, six)]
    assert [r["num_branches"] for r in runs] == [3, 6]
    with pytest.raises(CalexError, match="sdn has runs with 3 and 6 exits"):
        flow_table(runs, 0.2, NUM_CLASSES)
    # thresholds of six branches beside exits of three: the files are of two sweeps.
    six_rows = {f"m{m:g}": np.full((6, NUM_CLASSES), 0.5) for m in MARGINS}
    np.savez(three / "thresholds.npz", **six_rows)
    with pytest.raises(CalexError, match="3 branch exits but .* thresholds 6; rerun sweep_margins"):
        load_run(three / "exits.npz", {})
    with np.load(six / "exits.npz") as data:
        old = {k: data[k] for k in ("margins", "exit_branch", "final_pred", "labels")}
    np.savez(six / "exits.npz", **old)
    with pytest.raises(CalexError, match="older format.*costs"):
        load_run(six / "exits.npz", {})
