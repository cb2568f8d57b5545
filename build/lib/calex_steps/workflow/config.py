"""Configuration: schema validation with one-line errors, defaults, resolved recipes.

Imported by the Snakefile at parse time, so it must stay light (no torch).
"""

from __future__ import annotations

import copy
from importlib import resources
from typing import Any

import jsonschema
import yaml

from calex_steps.errors import CalexError

HIERARCHICAL_SOURCES = ("cifar100_coarse", "synthetic")
"""Sources whose backbone pretrains on fine labels and needs the coarse probe."""

RECIPE_ONLY_KEYS = (
    "head",
    "target",
    "weighting",
    "calibration",
    "schedule",
    "cascade_input",
    "exit_signal",
    "pteenet_lambda",
    "boost_r",
)


def load_schema() -> dict:
    """The JSON schema shipped with the package."""
    text = resources.files("calex_steps").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    """Turn a jsonschema error into one line naming the key and what is allowed."""
    where = _key_path(error.absolute_path)
    schema = error.schema
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = f"{where}.{extra[0]}" if error.absolute_path else extra[0]
        return f"unknown configuration key '{key}'; allowed keys here: {', '.join(allowed)}"
    if error.validator == "required":
        return f"configuration key '{where}' is missing {error.message.split(' is ')[0]}"
    if error.validator == "enum":
        return f"configuration key '{where}' = {error.instance!r}; allowed: {schema['enum']}"
    if error.validator == "type":
        return f"configuration key '{where}' = {error.instance!r} must be of type {schema['type']}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bound = {
            "minimum": ">=",
            "maximum": "<=",
            "exclusiveMinimum": ">",
            "exclusiveMaximum": "<",
        }[error.validator]
        limit = error.validator_value
        return f"configuration key '{where}' = {error.instance!r} must be {bound} {limit}"
    if error.validator == "pattern":
        return f"configuration key '{where}' = {error.instance!r} must match {schema['pattern']!r}"
    if error.validator == "propertyNames":
        return f"configuration key name under '{where}' is invalid: {error.message}"
    return f"configuration key '{where}': {error.message}"


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
    for name, recipe in config["recipes"].items():
        if recipe.get("exit_signal") == "ztw_ensemble" and not recipe.get("cascade_input"):
            raise CalexError(
                f"recipes.{name}: exit_signal 'ztw_ensemble' needs 'cascade_input: true'"
            )


def validate_config(config: dict) -> dict:
    """Validate ``config`` against the schema; return a copy with defaults filled.

    Raises ``CalexError`` with one line naming the offending key and what is allowed.
    """
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.path), str(e.path)))
    if errors:
        raise CalexError(_describe(errors[0]))
    config = copy.deepcopy(config)
    _fill_defaults(config, schema)
    _check_references(config)
    return config


def resolve_recipe(config: dict, name: str) -> dict:
    """The settings one recipe's training uses: training defaults + recipe overrides.

    Keys that the recipe's objective does not use are dropped, so that editing
    them does not mark the recipe's jobs as stale (e.g. the KD temperature for an
    ``argmax_ce`` recipe, the survivor mode for a ``uniform`` one).
    """
    settings = dict(config["training"])
    settings.update(config["recipes"][name])
    if settings["target"] != "kd":
        settings.pop("kd_temperature", None)
    if settings["weighting"] != "survivor":
        settings.pop("survivor_mode", None)
    return settings


def needs_probe(dataset: dict) -> bool:
    """Whether a dataset's backbone pretrains on fine labels and needs the coarse probe."""
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
    else:
        kind = sub.get("type", "")
        kind = " or ".join(kind) if isinstance(kind, list) else kind
    default = f"`{json_default(sub['default'])}`" if "default" in sub else ""
    if described or "description" in sub:
        yield name, kind, default, sub.get("description", "").strip()
    yield from _rows(sub, f"{name}.")


def json_default(value) -> str:
    import json

    return json.dumps(value)


def reference_markdown() -> str:
    """The configuration reference table of the README, generated from the schema."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, text in _rows(load_schema(), ""):
        lines.append(f"| `{key}` | {kind} | {default} | {text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
