# Configuration checks and the input functions every rule file uses.
# Only light imports here: every cluster job parses this file again.
import json
import os
import sys
from pathlib import Path

from calex_steps.config import needs_probe, resolve_recipe, validate_config
from calex_steps.datasets import check_source
from calex_steps.io import CalexError

try:
    CFG = validate_config(config)
except CalexError as exc:
    sys.exit(f"calex: configuration error: {exc}")

STUDY = CFG["study"]
STEPS = "calex_steps"
RESULTS = "results"


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    backbone="[A-Za-z0-9][A-Za-z0-9_-]*",
    recipe="[A-Za-z0-9][A-Za-z0-9_-]*",
    seed="[0-9]+",
    branch="[0-9]+",


def _check_sources():
    """Stop before any job starts when a dataset of the study is missing."""
    for name in STUDY["datasets"]:
        problem = check_source(CFG["datasets"][name])
        if problem:
            sys.exit(f"calex: dataset '{name}' is missing: {problem}")
    for name in STUDY["backbones"]:
        weights = CFG["backbones"][name]["checkpoint"]
        if weights and not Path(weights).is_file():
            sys.exit(
                f"calex: backbones.{name}.checkpoint is {weights}, which does not exist; "
                "put the trained weights there or fix the path"
            )


_check_sources()


def _use_this_python():
    """Let job shells find the interpreter running Snakemake as `python`.

    A virtualenv's snakemake may be called without activating the venv; its
    jobs must still import calex_steps. Jobs in conda environments are left alone.
    """
    methods = {str(m).lower() for m in workflow.deployment_settings.deployment_method}
    if not any("conda" in m for m in methods):
        shell.prefix(f'export PATH="{os.path.dirname(sys.executable)}:$PATH"; ')


_use_this_python()


def as_json(value):
    """Settings travel to the steps as one sorted JSON argument (stable for rerun checks)."""
    return json.dumps(value, sort_keys=True)


def code(*modules):
    """Module files a step runs, as inputs: editing a step's code reruns the step."""
    return [f"{STEPS}/{m}.py" for m in ("io",) + modules]


def gpu(wildcards=None):
    """Torch stages hold a GPU unless the configuration pins them to the CPU."""
    return 0 if CFG["device"] == "cpu" else 1


def dataset_cfg(wildcards):
    return CFG["datasets"][wildcards.dataset]


def backbone_cfg(wildcards):
    return CFG["backbones"][wildcards.backbone]


def backbone_model_cfg(wildcards):
    """What building the network reads: the attach points stay out (they only
    concern the feature cache), so editing them never retrains the backbone."""
    return {k: v for k, v in backbone_cfg(wildcards).items() if k != "attach_points"}


def num_branches(backbone):
    return len(CFG["backbones"][backbone]["attach_points"])


def probe_input(wildcards):
    """The coarse probe is the backbone's classifier on hierarchical datasets only."""
    if needs_probe(dataset_cfg(wildcards)):
        return f"{RESULTS}/{wildcards.dataset}/{wildcards.backbone}/probe.pt"
    return []


def train_settings(recipe):
    """What branch training reads: the sweep-only keys stay out of its params."""
    settings = resolve_recipe(CFG, recipe)
    for key in ("calibration", "exit_signal"):
        settings.pop(key)
    return settings


def run_path(dataset, backbone, recipe, seed):
    """The folder of one run: every branch, sweep and cascade file of it."""
    return f"{RESULTS}/{dataset}/{backbone}/{recipe}/seed{seed}"


RUN_PATTERN = run_path("{dataset}", "{backbone}", "{recipe}", "{seed}")


def run_dir(w):
    return run_path(w.dataset, w.backbone, w.recipe, w.seed)


def per_branch(folder, stem, count, ext="npz"):
    """``folder/{stem}1.{ext}`` .. ``folder/{stem}{count}.{ext}``."""
    return [f"{folder}/{stem}{k}.{ext}" for k in range(1, count + 1)]


def signal_stem(recipe):
    """Which per-branch files hold a recipe's exit signal: ZTW's ensemble, else the branches."""
    signal = CFG["recipes"][recipe]["exit_signal"]
    return "ztw_ensemble" if signal == "ztw_ensemble" else "branch"


def previous_branches(wildcards):
    """Branch l waits for branches 1..l-1 only when its recipe reads their outputs."""
    recipe = CFG["recipes"][wildcards.recipe]
    if recipe["weighting"] != "survivor" and not recipe["cascade_input"]:
        return []
    return per_branch(run_dir(wildcards), "branch", int(wildcards.branch) - 1)


def branch_outputs(wildcards):
    return per_branch(run_dir(wildcards), "branch", num_branches(wildcards.backbone))


def alternation(names):
    """A regex matching exactly these names (and nothing when there are none)."""
    names = list(names)
    return "|".join(names) if names else "(?!)"


def backbones_with_checkpoint(given):
    """The backbones that bring (or do not bring) their own weights."""
    return alternation(
        b for b, s in CFG["backbones"].items() if bool(s["checkpoint"]) == given
    )


def recipes_with(schedule):
    """The recipes trained one way (sequential or joint)."""
    return alternation(
        r for r, s in CFG["recipes"].items() if s["schedule"] == schedule
    )


# ---- baselines (rules/baselines.smk) ----------------------------------------


def backbones_with_branches(count):
    """The backbones with ``count`` attach points."""
    return alternation(b for b in CFG["backbones"] if num_branches(b) == count)


def recipes_with_signal(signal):
    """The recipes whose exit signal is ``signal``."""
    return alternation(
        r for r, s in CFG["recipes"].items() if s["exit_signal"] == signal
    )


def exit_signal_files(wildcards):
    """What the sweep thresholds: ZTW's ensemble files, else the branch files."""
    count = num_branches(wildcards.backbone)
    return per_branch(run_dir(wildcards), signal_stem(wildcards.recipe), count)


def cached_floats(backbone):
    """Floats the cache holds per sample over all attach points."""
    points = CFG["backbones"][backbone]["attach_points"]
    return sum(attach_floats(backbone, point) for point in points)


def joint_mem_mb(wildcards):
    """RAM of a joint job: every attach point of all three splits (each at most the
    train split's size), float32, plus a working margin."""
    size = train_size(wildcards.dataset)
    return int(2000 + 3 * 4 * cached_floats(wildcards.backbone) * size / 2**20)


# ---- deployment (rules/deploy.smk) -----------------------------------------


def deployable_recipes():
    """Study recipes the cascade module runs (ZTW's ensemble exit signal is not one)."""
    return [
        r
        for r in STUDY["recipes"]
        if CFG["recipes"][r]["exit_signal"] != "ztw_ensemble"
    ]


def latency_runs(wildcards):
    return [
        run_path(wildcards.dataset, wildcards.backbone, r, s)
        for r in deployable_recipes()
        for s in STUDY["seeds"]
    ]


def latency_inputs(wildcards):
    """Every file the cascades of all runs of one dataset and backbone are built from."""
    count = num_branches(wildcards.backbone)
    files = []
    for run in latency_runs(wildcards):
        files += per_branch(run, "branch", count, ext="pt")
        files += [f"{run}/thresholds.npz", f"{run}/sweep.csv"]
    return files


# ---- tables, figures and the report (rules/report.smk) ----------------------

TABLES = f"{RESULTS}/tables"
FIGURES = f"{RESULTS}/figures"
CAPTIONS = "../reports/captions"


def study_files(wildcards, name, backbones=None):
    """One file per (backbone, recipe, seed) of the study for the wildcard's dataset."""
    return expand(
        f"{RESULTS}/{wildcards.dataset}/{{backbone}}/{{recipe}}/seed{{seed}}/{name}",
        backbone=backbones or STUDY["backbones"],
        recipe=STUDY["recipes"],
        seed=STUDY["seeds"],
    )


def study_runs(name):
    """Input function: one file per (recipe, seed) of the wildcard's dataset and backbone."""
    return lambda w: study_files(w, name, [w.backbone])


def exit_signals():
    """Each study recipe's exit signal (the figures read the matching files)."""
    return {r: CFG["recipes"][r]["exit_signal"] for r in STUDY["recipes"]}


def signal_files(wildcards):
    """The per-branch exit-signal files of every run of a (dataset, backbone)."""
    count = num_branches(wildcards.backbone)
    files = []
    for recipe in STUDY["recipes"]:
        for seed in STUDY["seeds"]:
            run = run_path(wildcards.dataset, wildcards.backbone, recipe, seed)
            files += per_branch(run, signal_stem(recipe), count)
    return files


def exemplar_recipe():
    """The recipe the exemplar grid shows: calexnet, else the study's first."""
    return "calexnet" if "calexnet" in STUDY["recipes"] else STUDY["recipes"][0]


def exemplar_run(wildcards):
    """The run whose exits the exemplar grid shows (its recipe, the first seed)."""
    seed = STUDY["seeds"][0]
    return run_path(wildcards.dataset, wildcards.backbone, exemplar_recipe(), seed)


def exemplar_signals(wildcards):
    """The exit-signal files of the exemplar run only."""
    count = num_branches(wildcards.backbone)
    return per_branch(exemplar_run(wildcards), signal_stem(exemplar_recipe()), count)


def figure_settings():
    return as_json(
        {
            "recipes": STUDY["recipes"],
            "margins": CFG["sweep"]["margins"],
            "exit_signals": exit_signals(),
        }
    )


FIGURE_FAMILIES = ("pareto", "ablation", "calibration", "shift", "flow", "exemplars")


def report_targets():
    """Every table, figure and the summary of the study (added to all_targets)."""
    tables = expand(
        f"{TABLES}/{{dataset}}/loss_at_fr.{{ext}}",
        dataset=STUDY["datasets"],
        ext=("csv", "md", "tex"),
    )
    figures = expand(
        f"{FIGURES}/{{dataset}}/{{backbone}}/{{family}}.{{ext}}",
        dataset=STUDY["datasets"],
        backbone=STUDY["backbones"],
        family=FIGURE_FAMILIES,
        ext=("png", "pdf"),
    )
    return tables + figures + [f"{RESULTS}/summary.md"]


def all_targets():
    """Sweeps of every run, exported cascades, latency tables (and the report outputs)."""
    study = dict(dataset=STUDY["datasets"], backbone=STUDY["backbones"])
    targets = expand(
        f"{RUN_PATTERN}/sweep.csv",
        recipe=STUDY["recipes"],
        seed=STUDY["seeds"],
        **study,
    )
    targets += expand(
        f"{RUN_PATTERN}/cascade_m{{margin}}.pt",
        recipe=deployable_recipes(),
        seed=STUDY["seeds"],
        margin=CFG["deploy"]["margin"],
        **study,
    )
    targets += expand(
        f"{RESULTS}/{{dataset}}/{{backbone}}/latency/latency.csv", **study
    )
    return targets + report_targets()


# ---- resource estimates (documented in README, "Resources") ----------------

_TRAIN_SIZE = {"cifar100_coarse": 40_000, "cifar10": 45_000, "cinic10": 90_000}
_GPU_MIN_PER_EPOCH = {
    "resnet18": 0.4,
    "resnet50": 1.2,
}  # full width, 50k images, one A10G


def train_size(dataset):
    settings = CFG["datasets"][dataset]
    return settings.get("n_train") or _TRAIN_SIZE.get(settings["source"], 50_000)


def pretrain_runtime(wildcards):
    """Minutes for pretraining: epochs x size x per-epoch cost, with a CPU factor."""
    bb = backbone_cfg(wildcards)
    per_epoch = _GPU_MIN_PER_EPOCH.get(bb["arch"], 1.0) * bb["width"] ** 2
    per_epoch *= train_size(wildcards.dataset) / 50_000
    factor = 30 if CFG["device"] == "cpu" else 1
    return int(15 + factor * per_epoch * CFG["pretrain"]["epochs"])


# Channels (before the ResNet50 expansion x4) and side of each stage's map at 32x32 input.
_STAGE_SHAPE = {
    "layer1": (64, 32),
    "layer2": (128, 16),
    "layer3": (256, 8),
    "layer4": (512, 4),
}


def attach_floats(backbone, point):
    """Floats the cache holds per sample for one attach point (Gram or map, the smaller)."""
    bb = CFG["backbones"][backbone]
    expansion = 4 if bb["arch"] == "resnet50" else 1
    channels, side = _STAGE_SHAPE.get(
        point.split(".")[0], (512, 32)
    )  # unknown: generous
    d = max(1, int(channels * expansion * bb["width"]))
    return min(d * (d + 1) // 2, d * side * side)


def feature_mem_mb(wildcards):
    """RAM for one branch's cached features of all three splits, plus a working margin."""
    point = backbone_cfg(wildcards)["attach_points"][int(wildcards.branch) - 1]
    floats = attach_floats(wildcards.backbone, point)
    return int(2000 + 3 * 4 * floats * train_size(wildcards.dataset) / 2**20)
