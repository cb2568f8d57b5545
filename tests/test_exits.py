"""Each recipe's exits and the feature cache's layout (calex_steps/workflow/exits.py)."""

from __future__ import annotations

import pytest

from calex_steps.errors import CalexError
from calex_steps.workflow.exits import cache_layout, forward_key, num_exits, recipe_exits


def study(recipes: dict, exits: dict, backbones=("b",)) -> dict:
    return {
        "study": {"recipes": list(recipes), "backbones": list(backbones)},
        "recipes": recipes,
        "backbones": {b: {"attach_points": ["layer1", "layer2", "layer3"]} for b in backbones},
        "recipe_exits": exits,
    }


def test_forward_order_puts_blocks_before_their_stage_end():
    names = ["layer3", "layer1", "layer2.10", "layer1.3", "layer2.2"]
    assert sorted(names, key=forward_key) == [
        "layer1.3",
        "layer1",
        "layer2.2",
        "layer2.10",
        "layer3",
    ]
    assert sorted(["features.12", "features.3"], key=forward_key) == ["features.3", "features.12"]


def test_cache_holds_the_union_of_exits_with_the_forms_their_heads_read():
    cfg = study(
        {
            "proto": {"head": "augmented"},
            "sdn": {"head": "sdn"},
            "msp": {"branches_from": "sdn"},
            "ztw": {"head": "ztw_cascading"},
        },
        {
            "proto": {"b": ["layer1", "layer2", "layer3"]},
            "sdn": {"b": ["layer1.3", "layer2", "layer3.1"]},
            "msp": {"b": ["layer1.3", "layer2", "layer3.1"]},
            "ztw": {"b": ["layer1.3"]},
        },
    )
    assert cache_layout(cfg, "b") == {
        "layer1.3": ["pooled", "map"],
        "layer1": ["proto"],
        "layer2": ["proto", "pooled"],
        "layer3.1": ["pooled"],
        "layer3": ["proto"],
    }
    assert recipe_exits(cfg, "msp", "b") == ["layer1.3", "layer2", "layer3.1"]
    assert num_exits(cfg, "ztw") == 1


def test_a_recipe_without_exits_has_the_backbone_attach_points():
    cfg = study({"r": {"head": "basic"}}, {})
    assert recipe_exits(cfg, "r", "b") == ["layer1", "layer2", "layer3"]


def test_different_exit_counts_on_two_backbones_are_refused():
    cfg = study({"r": {"head": "sdn"}}, {"r": {"a": ["layer1"], "b": ["layer1", "layer2"]}},
                backbones=("a", "b"))  # fmt: skip
    with pytest.raises(CalexError, match=r"recipe 'r' has a different number of exits"):
        num_exits(cfg, "r")
