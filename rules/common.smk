# Configuration checks and the helpers all rule files use. Settings travel as
# JSON params, each rule's code inputs are derived from its module's imports.
# Only light imports here: every cluster job parses this file again.
import json
import os
import sys
from pathlib import Path

from calex_steps.data.sources import check_source
from calex_steps.errors import CalexError
from calex_steps.workflow import resources as estimate
from calex_steps.workflow.code_deps import module_files
from calex_steps.workflow.config import (
    needs_probe,
    own_branch_recipes,
    resolve_recipe,
    validate_config,
)
from calex_steps.workflow.exits import (
    cache_layout,
    exit_recipes,
    num_exits,
    recipe_exits,
)

try:
    CFG = validate_config(config)
except CalexError as exc:
    sys.exit(f"calex: configuration error: {exc}")

STUDY = CFG["study"]
PACKAGE_DIR = Path(workflow.basedir) / "calex_steps"


def _check_sources():
    """Stop before any job starts when a dataset or a user checkpoint of the study is missing."""
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


def code(stage):
    """The package files ``calex_steps.stages.<stage>`` imports, as inputs: editing any of
    them reruns the rule, editing anything else does not (calex_steps/workflow/code_deps.py).
    """
    files = module_files(f"calex_steps.stages.{stage}", PACKAGE_DIR)
    return [os.path.relpath(PACKAGE_DIR.parent / f) for f in files]


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


EXIT_RECIPES = exit_recipes(CFG)  # the study's recipes and their sources


def num_branches(recipe):
    """How many exits (branch files) a recipe has (the same on every study backbone)."""
    return num_exits(CFG, recipe)


def train_settings(recipe):
    """What branch training reads: the sweep-only keys stay out of its params."""
    settings = resolve_recipe(CFG, recipe)
    for key in ("calibration", "exit_signal"):
        settings.pop(key, None)  # a global threshold calibrates nothing
    return settings


def alternation(names):
    """A regex matching exactly these names (and nothing when there are none)."""
    names = list(names)
    return "|".join(names) if names else "(?!)"


def backbones_with_checkpoint(given):
    """The backbones that bring (or do not bring) their own weights."""
    return alternation(
        b for b, s in CFG["backbones"].items() if bool(s["checkpoint"]) == given
    )


def recipes_with(key, value, count=None):
    """The recipes whose ``key`` is ``value`` (e.g. schedule joint, exit_signal ztw_ensemble),
    and, with ``count``, that many exits."""
    return alternation(
        r
        for r, s in CFG["recipes"].items()
        if s[key] == value
        and (count is None or (r in EXIT_RECIPES and num_branches(r) == count))
    )
