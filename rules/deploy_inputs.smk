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
