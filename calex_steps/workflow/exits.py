"""A study's exits: where each recipe's branches attach, and what the feature cache of a
backbone stores at each attach point for the heads that read it (docs/exits.md).

Light (no torch): the Snakefile's rules read it at parse time.
"""

from __future__ import annotations

from calex_steps.data.feature_cache import HEAD_FORMS
from calex_steps.errors import CalexError


def recipe_exits(config: dict, name: str, backbone: str) -> list[str]:
    """The attach points of recipe ``name``'s exits on ``backbone``, in forward order: its
    ``exits`` (resolved once by ``validate_config`` when a placement rule), else the
    backbone's ``attach_points``; a recipe with ``branches_from`` has its source's."""
    source = config["recipes"][name].get("branches_from") or name
    resolved = config.get("recipe_exits", {}).get(name, {}).get(backbone)
    if resolved is not None:
        return list(resolved)
    spec = config["recipes"][source].get("exits") or config["backbones"][backbone]["attach_points"]
    if not isinstance(spec, list):
        raise CalexError(f"recipes.{source}.exits was not resolved to attach points on {backbone}")
    return list(spec)


def num_exits(config: dict, name: str) -> int:
    """How many exits recipe ``name`` has: the same on every backbone of the study."""
    counts = {b: len(recipe_exits(config, name, b)) for b in config["study"]["backbones"]}
    if len(set(counts.values())) > 1:
        raise CalexError(
            f"recipe '{name}' has a different number of exits per backbone ({counts}); give "
            "it the same count everywhere, or one recipe per backbone"
        )
    return next(iter(counts.values()))


def forward_key(point: str) -> tuple:
    """Sort key of an attach point in forward order: ``layerK.i`` before ``layerK`` (its last
    block) before ``layer{K+1}.0``; ``features.i`` by i; anything else by name."""
    head, _, rest = point.partition(".")
    if head.startswith("layer") and head[5:].isdigit():
        return (0, int(head[5:]), int(rest) if rest.isdigit() else float("inf"), point)
    if head == "features" and rest.isdigit():
        return (0, 0, int(rest), point)
    return (1, 0, 0, point)


def cache_layout(config: dict, backbone: str) -> dict[str, list[str]]:
    """What ``features.h5`` of a backbone stores: for every attach point any study recipe
    exits at (in forward order), the forms its heads read (``HEAD_FORMS``)."""
    layout: dict[str, set[str]] = {}
    recipes = config["recipes"]
    for name in config["study"]["recipes"]:
        source = recipes[name].get("branches_from") or name
        form = HEAD_FORMS[recipes[source]["head"]]
        for point in recipe_exits(config, name, backbone):
            layout.setdefault(point, set()).add(form)
    if not layout:
        layout = {p: {"proto"} for p in config["backbones"][backbone]["attach_points"]}
    order = ("proto", "pooled", "map")
    return {
        point: sorted(layout[point], key=order.index) for point in sorted(layout, key=forward_key)
    }


def exit_recipes(config: dict) -> list[str]:
    """The recipes whose exits the configuration resolved: the study's and their sources."""
    return list(config.get("recipe_exits", {}))
