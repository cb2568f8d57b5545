"""The configuration schema itself: every node uses only JSON-schema keywords, and every
key a user can set is described (a description cut by YAML shows up as a stray keyword)."""

from __future__ import annotations

from calex_steps.workflow.config import load_schema

KEYWORDS = {
    "$schema", "title", "description", "type", "properties", "additionalProperties",
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
