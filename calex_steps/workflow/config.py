"""Configuration: schema validation with one-line errors, defaults, resolved recipes.

Imported by the Snakefile at parse time, so it must stay light (no torch).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from calex_steps.errors import CalexError
from calex_steps.schema import first_error, load_schema
from calex_steps.workflow.placement import resolve_config_exits

HIERARCHICAL_SOURCES = ("cifar100_coarse", "synthetic")
"""Sources whose backbone pretrains on fine labels and needs the coarse probe."""

RECIPE_ONLY_KEYS = ("branches_from", "head", "exits", "target", "weighting", "calibration",
                    "calibration_target", "thresholds", "schedule", "cascade_input",
                    "exit_signal", "temperature_scaling", "pteenet_lambda", "boost_r",
                    "search")  # fmt: skip
"""Recipe keys with no counterpart under ``training``."""

SWEEP_KEYS = ("branches_from", "calibration", "calibration_target", "thresholds",
              "exit_signal", "temperature_scaling")  # fmt: skip
"""Recipe keys only the sweep reads: every other recipe key is a training key."""

TRAINING_REQUIRED = ("head", "target", "weighting")
SPLIT_DATASET = "{dataset}-split{split}"
"""Key of the dataset split k of a dataset whose validation part is carved from train."""

LR_BATCH_SIZE = 256
"""``latency.lr_batch_size`` when unset and measured."""


def _fill_defaults(value: Any, schema: dict) -> None:
    """Insert schema defaults for absent keys, recursively, in place."""
    if not isinstance(value, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            _fill_defaults(value[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, item in value.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(item, extra)


def _check_references(config: dict) -> None:
    for section in ("datasets", "backbones", "recipes"):
        for name in config["study"][section]:
            if name not in config[section]:
                known = ", ".join(sorted(config[section])) or "none"
                raise CalexError(
                    f"study.{section} names '{name}', which is not a key of '{section}' "
                    f"(defined: {known}); add a '{section}.{name}' entry or remove it"
                )
    if stray := sorted(set(config["deploy"]["onnx_recipes"]) - set(config["study"]["recipes"])):
        raise CalexError(f"deploy.onnx_recipes names {stray}, which are not study recipes; "
                         "name study recipes or leave it empty")  # fmt: skip


def _check_branch_source(name: str, recipe: dict, recipes: dict) -> None:
    """A recipe either trains (head, target, weighting) or names a recipe that does."""
    source = recipe.get("branches_from")
    if source is None:
        missing = [k for k in TRAINING_REQUIRED if k not in recipe]
        if missing:
            raise CalexError(
                f"recipes.{name} trains branches and needs {missing}; or set "
                "branches_from: <recipe> to sweep another recipe's branches"
            )
        return
    if source not in recipes or "branches_from" in recipes[source]:
        trained = sorted(r for r, entry in recipes.items() if "branches_from" not in entry)
        raise CalexError(
            f"recipes.{name}.branches_from is '{source}', which is not a recipe that trains "
            f"branches; name one of {trained}"
        )
    training = sorted(k for k in recipe if k not in SWEEP_KEYS)
    if training:
        raise CalexError(
            f"recipes.{name} trains nothing (branches_from: {source}); remove {training}, "
            f"or set them in recipes.{source}"
        )


def _check_search(name: str, recipe: dict) -> None:
    """Only a joint recipe (PTEEnet, BoostNet) searches its settings (search_baseline); ZTW's
    cascading head reads the previous head's logits."""
    if recipe.get("head") == "ztw_cascading" and not recipe.get("cascade_input"):
        raise CalexError(f"recipes.{name}: head 'ztw_cascading' needs cascade_input: true")
    if "search" in recipe and recipe.get("schedule") != "joint":
        raise CalexError(
            f"recipes.{name}.search needs 'schedule: joint' (the PTEEnet and BoostNet "
            "targets); remove it from this recipe"
        )


def _check_exit_rule(name: str, recipe: dict, recipes: dict) -> None:
    """The sweep keys of one recipe (as written, before defaults) fit together."""
    signal = recipe.get("exit_signal", "branch")
    if recipe.get("thresholds", "per_class") == "per_class":
        if "calibration" not in recipe:
            raise CalexError(
                f"recipes.{name} has per-class thresholds and needs 'calibration' "
                "(full or cascade); or set thresholds: global"
            )
    else:
        given = [k for k in ("calibration", "calibration_target") if k in recipe]
        if given:
            raise CalexError(
                f"recipes.{name} sweeps one global threshold and calibrates nothing; remove {given}"
            )
    owner = recipes.get(recipe.get("branches_from"), recipe)
    if signal == "ztw_ensemble" and "branches_from" in recipe:
        if owner.get("exit_signal") != "ztw_ensemble":
            raise CalexError(
                f"recipes.{name}: exit_signal 'ztw_ensemble' reads the ensemble files of "
                f"'{recipe['branches_from']}', whose exit_signal is not ztw_ensemble"
            )
    if recipe.get("temperature_scaling"):
        if signal in ("branch", "ztw_ensemble", "patience"):
            raise CalexError(
                f"recipes.{name}: temperature_scaling rescales the class logits, which "
                f"exit_signal '{signal}' does not read; use max_softmax, entropy or top2_gap"
            )
        if recipe.get("calibration_target") == "agree":
            raise CalexError(
                f"recipes.{name}: temperature_scaling fits T against labels, which "
                "calibration_target 'agree' does without; drop one of them"
            )


def retrains_per_split(dataset: dict) -> bool:
    """Whether a new calibration/test split changes what the backbone and branches train
    on: the validation part is carved from the official training split (``val_from``
    train, the default of the CIFAR sources, as in ``data.splits.three_splits``)."""
    if dataset["source"] == "synthetic":
        return False
    default = "valid" if dataset["source"] == "cinic10" else "train"
    return dataset.get("val_from", default) == "train"


def split_source(config: dict, dataset: str, split: int) -> str:
    """The dataset whose features and branches the sweep of ``split`` reads: the dataset
    itself, or for a dataset that retrains per split its derived ``<key>-split<k>``."""
    if split > 0 and retrains_per_split(config["datasets"][dataset]):
        return SPLIT_DATASET.format(dataset=dataset, split=split)
    return dataset


def _add_split_datasets(config: dict) -> None:
    """Add ``<key>-split<k>`` (k = 1 .. splits-1, split_seed + k) for every study dataset
    that retrains per split; each is an ordinary dataset the training rules build."""
    for name in config["study"]["datasets"]:
        for k in range(1, config["study"]["splits"]):
            derived = split_source(config, name, k)
            if derived == name:
                break
            entry = {**config["datasets"][name]}
            entry["split_seed"] = entry["split_seed"] + k
            if config["datasets"].setdefault(derived, entry) != entry:
                raise CalexError(
                    f"datasets.{derived} is also split {k} of '{name}' (study.splits); "
                    "rename that dataset"
                )


def _resolve_lr_batch_size(config: dict) -> None:
    latency = config["latency"]
    sizes = latency["batch_sizes"]
    if "lr_batch_size" not in latency:
        latency["lr_batch_size"] = LR_BATCH_SIZE if LR_BATCH_SIZE in sizes else max(sizes)
    elif latency["lr_batch_size"] not in sizes:
        raise CalexError(
            f"latency.lr_batch_size = {latency['lr_batch_size']} is not one of "
            f"latency.batch_sizes {sizes}; add it there or choose one of them"
        )


def validate_config(config: dict) -> dict:
    """Validate ``config`` against the schema; return a copy with defaults filled.

    Exits become block names once: ``backbones.<b>.attach_points`` and
    ``config["recipe_exits"][recipe][backbone]`` (``placement.resolve_config_exits``).
    Raises ``CalexError`` with one line naming the offending key and what is allowed.
    """
    schema = load_schema()
    problem = first_error(schema, config)
    if problem:
        raise CalexError(problem)
    config = copy.deepcopy(config)
    for name, recipe in config["recipes"].items():
        _check_branch_source(name, recipe, config["recipes"])
        _check_exit_rule(name, recipe, config["recipes"])
        _check_search(name, recipe)
    _fill_defaults(config, schema)
    _check_references(config)
    _fill_normalization(config)
    for recipe in config["recipes"].values():
        if "branches_from" in recipe:
            recipe["schedule"] = None  # trains nothing: no training rule matches it
    config["recipe_exits"] = resolve_config_exits(config)
    _add_split_datasets(config)
    _resolve_lr_batch_size(config)
    return config


IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
"""The input statistics torchvision's ImageNet classifiers are trained with."""


def _fill_normalization(config: dict) -> None:
    """torchvision backbones default to ImageNet statistics; every other arch must say."""
    for name, backbone in config["backbones"].items():
        if "normalization" in backbone:
            continue
        if not backbone["arch"].startswith("torchvision:"):
            raise CalexError(
                f"backbones.{name}.normalization is missing; give the mean and std "
                f"(R, G, B, on [0, 1] pixels) the {backbone['arch']} weights expect"
            )
        backbone["normalization"] = copy.deepcopy(IMAGENET_NORMALIZATION)


def resolve_recipe(config: dict, name: str) -> dict:
    """The settings one recipe's training uses: training defaults + recipe overrides.

    Keys that the recipe's objective does not use are dropped, so that editing
    them does not mark the recipe's jobs as stale (e.g. the KD temperature for an
    ``argmax_ce`` recipe, the survivor mode for a ``uniform`` one). Of the sweep's
    keys only ``calibration`` and ``exit_signal`` stay (training ignores both): editing
    ``calibration_target``, ``thresholds`` or ``temperature_scaling`` reruns only sweeps.
    A recipe with ``branches_from`` trains nothing and has no training settings.
    """
    recipe = config["recipes"][name]
    if "branches_from" in recipe:
        raise CalexError(
            f"recipe '{name}' trains nothing: it sweeps the branches of "
            f"'{recipe['branches_from']}' (branches_from)"
        )
    settings = dict(config["training"])
    settings.update(recipe)
    for key in ("calibration_target", "thresholds", "temperature_scaling", "exits"):
        settings.pop(key, None)
    if settings["target"] != "kd":
        settings.pop("kd_temperature", None)
    if settings["weighting"] != "survivor":
        settings.pop("survivor_mode", None)
    return settings


def branch_recipe(config: dict, name: str) -> str:
    """The recipe whose branch files recipe ``name`` sweeps (itself, or its branches_from)."""
    return config["recipes"][name].get("branches_from") or name


def own_branch_recipes(config: dict, signals: tuple[str, ...]) -> list[str]:
    """Study recipes that train their own branches and exit on one of ``signals``: what
    the deployable cascade runs (``("branch",)``) and what the calibration figure reads."""
    recipes = config["recipes"]
    return [
        r
        for r in config["study"]["recipes"]
        if recipes[r]["exit_signal"] in signals and not recipes[r].get("branches_from")
    ]


def head_kind(config: dict, name: str) -> str:
    """The head kind of a recipe's branches as segments.json keys it: the recipe's ``head``,
    with ``+cascade`` for heads fed the previous branch's logits (``basic+cascade``)."""
    recipe = config["recipes"][branch_recipe(config, name)]
    return recipe["head"] + ("+cascade" if recipe["cascade_input"] else "")


def sweep_settings(config: dict, recipe: str, dataset: str, split: int) -> dict:
    """The ``--settings`` of one sweep: the grids, the recipe's exit rule, the split, what
    the latency prediction reads (docs/calibration.md), and the bootstrap resamples it
    recalibrates on (docs/results.md)."""
    rule = config["recipes"][recipe]
    redraw = split > 0 and split_source(config, dataset, split) == dataset
    settings = {
        "margins": config["sweep"]["margins"],
        "dense": config["sweep"]["dense"],
        "exit_signal": rule["exit_signal"],
        "thresholds": rule["thresholds"],
        "temperature_scaling": rule["temperature_scaling"],
        "split": split,
        "split_seed": config["datasets"][split_source(config, dataset, split)]["split_seed"],
        "redraw": redraw,
        "lr_batch_size": config["latency"]["lr_batch_size"],
        "latency_head": head_kind(config, recipe),
        "bootstrap_seed": config["report"]["bootstrap_seed"],
        "calibration_resamples": config["report"]["calibration_resamples"],
    }
    if rule["thresholds"] == "per_class":
        settings["calibration"] = rule["calibration"]
        settings["calibration_target"] = rule["calibration_target"]
    return settings


def needs_probe(dataset: dict, backbone: dict | None = None) -> bool:
    """Whether the task's classifier is a linear probe on frozen features: the dataset's
    backbone pretrains on fine labels, or a checkpoint's own head is replaced (new_head)."""
    if backbone is not None and backbone.get("checkpoint") and backbone.get("new_head"):
        return True
    return dataset["source"] in HIERARCHICAL_SOURCES


def _rows(schema: dict, prefix: str):
    """(key, type, default, description) for every key of the schema, depth first."""
    for key, sub in schema.get("properties", {}).items():
        yield from _row_and_children(sub, f"{prefix}{key}")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _row_and_children(extra, f"{prefix}<name>", described=False)


def _row_and_children(sub: dict, name: str, described: bool = True):
    if "enum" in sub:
        kind = " \\| ".join(f"`{v}`" for v in sub["enum"])
    elif "oneOf" in sub:
        kind = " or ".join(branch.get("type", "") for branch in sub["oneOf"])
    else:
        kind = sub.get("type", "")
        kind = " or ".join(kind) if isinstance(kind, list) else kind
    default = f"`{json.dumps(sub['default'])}`" if "default" in sub else ""
    if described or "description" in sub:
        yield name, kind, default, sub.get("description", "").strip()
    yield from _rows(sub, f"{name}.")
    for branch in sub.get("oneOf", []):
        yield from _rows(branch, f"{name}.")


def reference_markdown() -> str:
    """The configuration reference table of config/README.md, generated from the schema."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, text in _rows(load_schema(), ""):
        lines.append(f"| `{key}` | {kind} | {default} | {text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
