"""The configuration schema and its one-line errors, for the workflow and for every stage.

The workflow validates the whole configuration against
``calex_steps/schemas/config.schema.yaml`` when the Snakefile is parsed
(``workflow.config.validate_config``). A stage called by hand gets no such check,
so every entry point validates its own JSON settings against the part of the same
schema they come from (``validate_settings``, called by ``cli.parse_json_arg``):
a wrong type, a negative count or an unknown key stops it with the schema's one
line, never a traceback.

A part is named by its configuration path: ``probe``, ``datasets.*`` (the entry of
any dataset), ``backbones.*.attach_points``; ``$defs.<name>`` names a definition
of the schema's ``$defs``. Settings a rule assembles from several parts (a sweep
reads the ``sweep`` block, the recipe's exit rule and values the workflow
derives) name them all: each key is checked against the first part that defines
it, and a key no part defines is refused. Validation never fills defaults, so it
cannot change a result (``calex_steps.workflow.code_deps``).
"""

from __future__ import annotations

from importlib import resources

import jsonschema
import yaml
from jsonschema.exceptions import best_match

from calex_steps.errors import CalexError


def load_schema() -> dict:
    """The JSON schema shipped with the package."""
    text = resources.files("calex_steps").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def key_path(path) -> str:
    """``a.b.0`` for a JSON path, ``<top level>`` for the root."""
    return ".".join(str(p) for p in path) or "<top level>"


def describe_error(error: jsonschema.ValidationError) -> str:
    """Turn a jsonschema error into one line naming the key and what is allowed."""
    if error.validator == "oneOf" and error.context:
        error = best_match([error])  # the alternative of the value's own type, if any
    where = key_path(error.absolute_path)
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
    if error.validator == "oneOf":
        kinds = " or ".join(branch.get("type", "?") for branch in error.validator_value)
        return f"configuration key '{where}' = {error.instance!r} must be of type {kinds}"
    if error.validator == "propertyNames":
        return f"configuration key name under '{where}' is invalid: {error.message}"
    return f"configuration key '{where}': {error.message}"


def first_error(schema: dict, value: object) -> str | None:
    """The one-line description of the first error of ``value`` against ``schema``."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: (len(e.path), str(e.path)))
    return describe_error(errors[0]) if errors else None


def part(schema: dict, name: str) -> dict:
    """The sub-schema of a configuration path (see the module docstring)."""
    node, parts = schema, name.split(".")
    if parts[0] == "$defs":
        node, parts = schema["$defs"], parts[1:]
        node, parts = node[parts[0]], parts[1:]
    for key in parts:
        node = node["additionalProperties"] if key == "*" else node["properties"][key]
    return node


def settings_schema(names: str | tuple[str, ...], schema: dict | None = None) -> dict:
    """The schema of a stage's settings: one part as it is, or several parts merged into
    one object whose keys are those of the parts (the first part defining a key wins)."""
    schema = load_schema() if schema is None else schema
    if isinstance(names, str):
        return part(schema, names)
    properties: dict = {}
    for name in reversed(names):
        properties.update(part(schema, name).get("properties", {}))
    return {"type": "object", "additionalProperties": False, "properties": properties}


def validate_settings(value: object, names: str | tuple[str, ...], flag: str) -> None:
    """Raise ``CalexError`` with the schema's one line when ``value`` (the JSON given as
    ``flag``) does not fit the part(s) ``names`` of the configuration schema."""
    problem = first_error(settings_schema(names), value)
    if problem:
        raise CalexError(f"{flag}: {problem}")
