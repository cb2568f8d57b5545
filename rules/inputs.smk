# Input functions: which files a job reads, decided from the wildcards and the study.
from calex_steps.workflow.config import (
    branch_recipe,
    head_kind,
    split_source,
    sweep_settings,
)


def probe_input(wildcards):
    """The probe is the classifier on hierarchical datasets and for a replaced head only."""
    if needs_probe(dataset_cfg(wildcards), backbone_cfg(wildcards)):
        return f"{RESULTS}/{wildcards.dataset}/{wildcards.backbone}/probe.pt"
    return []


def previous_branches(wildcards):
    """Branch l waits for branches 1..l-1 (of every seed) only when its recipe reads them."""
    recipe = CFG["recipes"][wildcards.recipe]
    if recipe["weighting"] != "survivor" and not recipe["cascade_input"]:
        return []
    return seed_branch_files(wildcards, int(wildcards.branch) - 1)


def branch_run(wildcards, split=0):
    """The run folder holding the branch files a recipe uses: its own, or that of its
    branches_from recipe; for split k of a dataset that retrains per split, the run of
    the derived dataset `<key>-split<k>`."""
    return run_path(
        split_source(CFG, wildcards.dataset, split),
        wildcards.backbone,
        branch_recipe(CFG, wildcards.recipe),
        wildcards.seed,
    )


def sweep_features(wildcards):
    """The feature cache a sweep reads (the derived dataset's for a retrained split)."""
    dataset = split_source(CFG, wildcards.dataset, int(wildcards.split))
    return f"{RESULTS}/{dataset}/{wildcards.backbone}/features.h5"


def exit_signal_files(wildcards):
    """What the sweep thresholds: ZTW's ensemble files, else the branch files."""
    count = num_branches(wildcards.recipe)
    run = branch_run(wildcards, int(wildcards.split))
    return per_branch(run, signal_stem(wildcards.recipe), count)


SEGMENTS_NAME = {"torch": "segments.json", "onnx": "segments_onnx.json"}[
    CFG["latency"]["lr_runtime"]
]


def segments_file(wildcards):
    """The measured segment times of a (dataset, backbone) (rule measure_segments, or
    measure_segments_onnx with latency.lr_runtime onnx), from which a sweep predicts its
    latency reduction (`--segments`)."""
    return f"{RESULTS}/{wildcards.dataset}/{wildcards.backbone}/latency/{SEGMENTS_NAME}"


def study_files(wildcards, name, backbones=None, splits=None, recipes=None):
    """One sweep file per (backbone, recipe, seed, split) of the study for the wildcard's
    dataset (``splits``, ``recipes``: which; all of the study's by default)."""
    return expand(
        f"{RESULTS}/{wildcards.dataset}/{{backbone}}/{{recipe}}/seed{{seed}}/split{{split}}/{name}",
        backbone=backbones or STUDY["backbones"],
        recipe=recipes or STUDY["recipes"],
        seed=STUDY["seeds"],
        split=SPLITS if splits is None else splits,
    )


def study_runs(name, splits=(0,), recipes=None):
    """Input function: one file per (recipe, seed, split) of the wildcard's dataset and
    backbone; split 0 only by default (most figures show the prepared partition)."""
    return lambda w: study_files(w, name, [w.backbone], list(splits), recipes)


def segment_files(wildcards, backbones=None):
    """The measured segment times (rule measure_segments) of each backbone of the
    wildcard's dataset (all of the study's by default): what the LR view was timed on.
    """
    return expand(
        f"{RESULTS}/{wildcards.dataset}/{{backbone}}/latency/{SEGMENTS_NAME}",
        backbone=backbones or STUDY["backbones"],
    )


SIGNAL_STEMS = ("branch", "ztw_ensemble")  # exit signals stored as per-branch files


def signal_files(wildcards):
    """The per-branch exit-signal files of every run of a (dataset, backbone) whose
    recipe trains its own branches and exits on them (the calibration figure's runs)."""
    files = []
    for recipe in own_branch_recipes(CFG, SIGNAL_STEMS):
        for seed in STUDY["seeds"]:
            run = run_path(wildcards.dataset, wildcards.backbone, recipe, seed)
            files += per_branch(run, signal_stem(recipe), num_branches(recipe))
    return files


def exemplar_recipe():
    """The recipe the exemplar grid shows: calexnet, else the study's first."""
    return "calexnet" if "calexnet" in STUDY["recipes"] else STUDY["recipes"][0]


def exemplar_run(wildcards):
    """The run whose exits the exemplar grid shows (its recipe, the first seed)."""
    seed = STUDY["seeds"][0]
    return run_path(wildcards.dataset, wildcards.backbone, exemplar_recipe(), seed)


def exemplar_split(wildcards):
    """The split folder of the exemplar run whose exits the grid shows (split 0)."""
    return split_dir(exemplar_run(wildcards))


def exemplar_signals(wildcards):
    """The exit-signal files of the exemplar run only."""
    count = num_branches(exemplar_recipe())
    return per_branch(exemplar_run(wildcards), signal_stem(exemplar_recipe()), count)


FIGURE_FAMILIES = ("pareto", "ablation", "calibration", "shift", "flow", "exemplars")


def report_targets():
    """Every figure, the summary and the claims of the study (added to all_targets); the
    tables come with the summary and the claims, which read them."""
    figures = expand(
        f"{FIGURES}/{{dataset}}/{{backbone}}/{{family}}.{{ext}}",
        dataset=STUDY["datasets"],
        backbone=STUDY["backbones"],
        family=FIGURE_FAMILIES,
        ext=("png", "pdf"),
    )
    return figures + [f"{RESULTS}/summary.md", f"{RESULTS}/claims.md"]


def all_targets():
    """Sweeps of every run, exported cascades, latency tables (and the report outputs)."""
    study = dict(dataset=STUDY["datasets"], backbone=STUDY["backbones"])
    targets = expand(
        f"{SPLIT_PATTERN}/sweep.csv",
        recipe=STUDY["recipes"],
        seed=STUDY["seeds"],
        split=SPLITS,
        **study,
    )
    targets += expand(
        f"{RUN_PATTERN}/cascade_m{{margin}}.pt",
        recipe=STUDY["recipes"],
        seed=STUDY["seeds"],
        margin=CFG["deploy"]["margin"],
        **study,
    )
    targets += expand(
        f"{RESULTS}/{{dataset}}/{{backbone}}/latency/latency.csv", **study
    )
    return targets + report_targets()


def figure_args(wildcards, input):
    """The stage's input flags, one per named input (code files excluded)."""
    return " ".join(
        f"--{name} {' '.join(map(str, files)) if isinstance(files, list) else files}"
        for name, files in input.items()
        if name not in ("code", "thresholds", "signals")
    )


def figure_settings(backbone=None, latency=False):
    """The figures' --settings: legend order, the paper's margins, the exit signals; for a
    figure drawn from a dataset-wide table the backbone it shows, for one with the LR
    view the batch size the sweep predicted latencies at."""
    settings = {
        "recipes": STUDY["recipes"],
        "margins": CFG["sweep"]["margins"],
        "exit_signals": {r: CFG["recipes"][r]["exit_signal"] for r in STUDY["recipes"]},
    }
    if backbone is not None:
        settings["backbone"] = backbone
    if latency:
        settings["lr_batch_size"] = CFG["latency"]["lr_batch_size"]
    return as_json(settings)
