"""The configuration schema itself: every node uses only JSON-schema keywords, and every
key a user can set is described (a description cut by YAML shows up as a stray keyword)."""

from __future__ import annotations

import importlib

import pytest

from calex_steps.workflow.config import load_schema

KEYWORDS = {
    "$schema", "$defs", "title", "description", "type", "properties", "additionalProperties",
    "required", "default", "enum", "const", "pattern", "propertyNames", "items",
    "minItems", "maxItems", "uniqueItems", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "oneOf", "anyOf", "allOf", "not", "if", "then", "else",
    "minProperties", "maxProperties", "examples",
}  # fmt: skip


def schema_nodes(node: dict, where: str = "<root>"):
    """(path, node) for the schema and every sub-schema in it."""
    yield where, node
    for key, sub in node.get("properties", {}).items():
        yield from schema_nodes(sub, f"{where}.{key}")
    for key in ("additionalProperties", "items", "propertyNames", "not", "if", "then", "else"):
        if isinstance(node.get(key), dict):
            yield from schema_nodes(node[key], f"{where}.<{key}>")
    for key, sub in node.get("$defs", {}).items():
        yield from schema_nodes(sub, f"{where}.$defs.{key}")
    for key in ("oneOf", "anyOf", "allOf"):
        for i, sub in enumerate(node.get(key, [])):
            yield from schema_nodes(sub, f"{where}.{key}[{i}]")


def test_every_schema_node_uses_only_known_keywords():
    stray = {
        f"{where}: {sorted(set(node) - KEYWORDS)}"
        for where, node in schema_nodes(load_schema())
        if set(node) - KEYWORDS
    }
    assert not stray, f"unknown schema keywords (a YAML-cut description?): {sorted(stray)}"


def test_every_settable_key_is_described():
    missing = [
        where
        for where, node in schema_nodes(load_schema())
        if not where.split(".")[-1].startswith("<") and "description" not in node
    ]
    assert not missing, f"schema keys without a description: {missing}"


@pytest.mark.parametrize(
    ("module", "argv", "expected"),
    [
        ("train_branch", ["--settings", '{"cls_epochs": "ten"}'],
         "--settings: configuration key 'cls_epochs' = 'ten' must be of type integer"),
        ("probe_coarse", ["--settings", '{"epochs": -2, "batch_size": 8, "lr": 0.1}'],
         "--settings: configuration key 'epochs' = -2 must be >= 1"),
        ("prepare_dataset", ["--settings", '{"source": "synthetic", "n_trian": 100}'],
         "--settings: unknown configuration key 'n_trian'; allowed keys here:"),
        ("cache_features", ["--settings", "{}", "--attach", '["layer1", 2]'],
         "--attach: configuration key '1' = 2 must be of type string"),
        ("sweep_margins", ["--settings", '{"margins": [0.1], "split": "first"}'],
         "--settings: configuration key 'split' = 'first' must be of type integer"),
    ],
)  # fmt: skip
def test_a_stage_called_by_hand_checks_its_settings_against_the_schema(
    module, argv, expected, tmp_path, capsys
):
    """The settings are checked before any input is opened: the paths here do not exist."""
    stage = importlib.import_module(f"calex_steps.stages.{module}")
    required = {
        action.option_strings[0]: "1" if action.type is int else str(tmp_path / "missing")
        for action in stage.build_parser()._actions
        if action.required and action.option_strings
    }
    given = dict(zip(argv[::2], argv[1::2], strict=True))
    args = [x for flag, value in {**required, **given}.items() for x in (flag, value)]
    assert stage.main(args) == 1
    err = capsys.readouterr().err
    lines = [s for s in err.splitlines() if s.startswith("calex error:")]
    assert len(lines) == 1 and lines[0].startswith(f"calex error: {expected}"), err
    assert "Traceback" not in err
