# Input functions of the deploy rules (rules/deploy.smk): what measure_segments reads,
# which heads (and ZTW ensembles) a recipe's cascade runs, and the one run per recipe
# that measure_latency times.
from calex_steps.workflow.config import head_kind

LATENCY_KEYS = ("batch_sizes", "warmup", "timed")


def segment_settings():
    """What measure_segments reads: how to time, how many prototypes a head has, and the
    head kinds of the study (each timed at every attach point of the cache)."""
    settings = {k: CFG["latency"][k] for k in LATENCY_KEYS}
    heads = sorted({head_kind(CFG, r) for r in STUDY["recipes"]})
    return settings | {"prototypes": CFG["training"]["prototypes"], "heads": heads}


def cascade_files(dataset, backbone, recipe, seed):
    """The heads a recipe's cascade runs (its branches_from recipe's) and, for ZTW's
    exit signal, the fitted ensembles beside them."""
    count = num_branches(recipe)
    source = run_path(dataset, backbone, branch_recipe(CFG, recipe), seed)
    ztw = CFG["recipes"][recipe]["exit_signal"] == "ztw_ensemble"
    return {
        "run": source,
        "heads": per_branch(source, "branch", count, "pt"),
        "ensembles": per_branch(source, "ztw_ensemble", count) if ztw else [],
    }


def latency_plan(wildcards):
    """One run per study recipe (the first seed) that measure_latency times."""
    seed = STUDY["seeds"][0]
    where = (wildcards.dataset, wildcards.backbone)
    plan = []
    for recipe in STUDY["recipes"]:
        run = run_path(wildcards.dataset, wildcards.backbone, recipe, seed)
        plan.append(
            {
                "recipe": recipe,
                "run": run,
                "branch_run": cascade_files(*where, recipe, seed)["run"],
                "exit_signal": CFG["recipes"][recipe]["exit_signal"],
                "head": head_kind(CFG, recipe),
                "exits": num_branches(recipe),
            }
        )
    return plan


def latency_inputs(wildcards):
    """Every file the timed cascades are built from."""
    files = []
    for entry in latency_plan(wildcards):
        found = cascade_files(
            wildcards.dataset, wildcards.backbone, entry["recipe"], STUDY["seeds"][0]
        )
        files += found["heads"] + found["ensembles"]
        files += [
            f"{split_dir(entry['run'])}/{n}" for n in ("thresholds.npz", "frontier.csv")
        ]
    return files


def cascade_inputs(wildcards):
    """What building one run's cascade reads (rules export_onnx, quantize_onnx)."""
    w = wildcards
    found = cascade_files(w.dataset, w.backbone, w.recipe, w.seed)
    root = f"{RESULTS}/{w.dataset}/{w.backbone}"
    files = {
        "backbone": f"{root}/backbone.pt",
        "features": f"{root}/features.h5",
        "prepared": f"{RESULTS}/{w.dataset}/prepared.h5",
        "thresholds": f"{split_dir(run_dir(w))}/thresholds.npz",
        "heads": found["heads"],
        "ensembles": found["ensembles"],
    }
    probe = probe_input(w)
    return files | ({"probe": probe} if probe else {})


def cascade_args(wildcards, input):
    """The flags naming those inputs, and the recipe's exit signal."""
    args = [f"--run-dir {run_dir(wildcards)}", f"--backbone {input.backbone}"]
    args += [f"--features {input.features} --thresholds {input.thresholds}"]
    args += [f"--branches {' '.join(input.heads)}"]
    if "probe" in input.keys():
        args.append(f"--probe {input.probe}")
    if input.ensembles:
        args.append(f"--ensembles {' '.join(input.ensembles)}")
    args.append(f"--exit-signal {CFG['recipes'][wildcards.recipe]['exit_signal']}")
    return " ".join(args)


INT8_RULE_KEYS = (
    "exit_signal",
    "thresholds",
    "temperature_scaling",
    "calibration",
    "calibration_target",
)


def int8_settings(recipe, dataset):
    """How an INT8 cascade's thresholds are recalibrated: the recipe's exit rule (as its
    sweep of split 0 applies it), and the images that set the quantization ranges."""
    settings = sweep_settings(CFG, recipe, dataset, 0)
    kept = {k: settings[k] for k in INT8_RULE_KEYS if k in settings}
    return kept | {"calibration_images": CFG["deploy"]["calibration_images"]}


def onnx_latency_plan(wildcards):
    """measure_latency's plan (only deploy.onnx_recipes when set) with each recipe's
    INT8 recalibration settings."""
    chosen = CFG["deploy"]["onnx_recipes"] or STUDY["recipes"]
    return [
        entry | {"settings": int8_settings(entry["recipe"], wildcards.dataset)}
        for entry in latency_plan(wildcards)
        if entry["recipe"] in chosen
    ]


def onnx_export_targets(int8=False):
    """Every study run's ONNX cascade at deploy.margin and its check (and INT8 variant)."""
    suffixes = [".onnx", "_check.json"] + (["_int8.onnx"] if int8 else [])
    return expand(
        f"{RUN_PATTERN}/cascade_m{{margin}}{{suffix}}",
        dataset=STUDY["datasets"],
        backbone=STUDY["backbones"],
        recipe=STUDY["recipes"],
        seed=STUDY["seeds"],
        margin=CFG["deploy"]["margin"],
        suffix=suffixes,
    )
