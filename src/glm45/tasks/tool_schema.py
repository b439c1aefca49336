"""JSON-schema checks and normalisation for OpenAI-style tool calls.

Covers the subset of JSON Schema that tool definitions use: ``type`` (one or a list),
``enum``, ``minimum``/``maximum``, ``minLength``/``maxLength``, ``pattern``, ``items``,
``properties``/``required``/``additionalProperties``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from glm45.tasks.common import TaskError


class ToolCallError(TaskError):
    """A tool call that cannot run: unknown tool, malformed or schema-violating arguments."""


_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def check_value(value: Any, schema: dict, path: str) -> list[str]:
    """Problems with ``value`` under ``schema``; ``path`` names it in the messages."""
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES.get(t, lambda v: False)(value) for t in names):
            return [f"{path}: expected {' or '.join(names)}, got {type(value).__name__} {value!r}"]
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{path}: {value!r} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{path}: {value!r} is above the maximum {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{path}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{path}: {value!r} does not match the pattern {schema['pattern']}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += check_value(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict) and ("properties" in schema or "required" in schema):
        problems += check_object(value, schema, path)
    return problems


def check_object(value: dict, schema: dict, path: str) -> list[str]:
    props = schema.get("properties", {})
    problems = [f"{path}: missing required argument {k!r}" for k in schema.get("required", []) if k not in value]
    for key, item in value.items():
        if key in props:
            problems += check_value(item, props[key], f"{path}.{key}")
        elif schema.get("additionalProperties", False) is False:
            problems.append(f"{path}: unknown argument {key!r}")
    return problems


def split_call(call: dict) -> tuple[str, Any]:
    """(name, arguments) from ``{"name", "arguments"}`` or OpenAI ``{"function": {...}}``."""
    if not isinstance(call, dict):
        raise ToolCallError(f"a tool call must be a dict, got {type(call).__name__}")
    fn = call.get("function", call)
    if not isinstance(fn, dict) or "name" not in fn:
        raise ToolCallError(f"a tool call needs a 'name' (or 'function.name'), got {call!r}")
    return fn["name"], fn.get("arguments", {})


def parse_arguments(arguments: Any) -> dict:
    """Arguments as a dict; a JSON string (OpenAI wire format) is decoded."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            raise ToolCallError(f"arguments are not valid JSON: {e}") from None
    if arguments is None:
        return {}
    if not isinstance(arguments, dict):
        raise ToolCallError(f"arguments must be a JSON object, got {type(arguments).__name__}")
    return arguments


def function_specs(tools: list[dict]) -> dict[str, dict]:
    """name -> function spec, for tools given as ``{"type": "function", "function": {...}}``
    or as bare function specs."""
    specs = {}
    for tool in tools:
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or "name" not in fn:
            raise ToolCallError(f"not a tool definition: {tool!r}")
        specs[fn["name"]] = fn
    return specs


def validate_call(call: dict, tools: list[dict]) -> list[str]:
    """Problems with ``call`` against the offered ``tools``: unknown tool, arguments that are
    not an object, missing required or unknown arguments, wrong types, enum/range/pattern.
    An empty list means the call is valid."""
    try:
        name, raw = split_call(call)
        arguments = parse_arguments(raw)
    except ToolCallError as e:
        return [str(e)]
    specs = function_specs(tools)
    if name not in specs:
        return [f"unknown tool {name!r}; offered: {sorted(specs)}"]
    schema = specs[name].get("parameters") or {"type": "object", "properties": {}}
    return check_object(arguments, schema, name)


def normalize_value(value: Any) -> Any:
    """Strings case- and whitespace-folded, integral floats as ints, recursively."""
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [normalize_value(v) for v in value]
    if isinstance(value, dict):
        return {k: normalize_value(v) for k, v in value.items()}
    return value


def normalize_call(call: dict, tools: list[dict] | None = None) -> tuple[str, dict]:
    """A comparable form: arguments decoded, schema defaults filled in, strings case- and
    whitespace-folded, integral floats as ints."""
    name, raw = split_call(call)
    arguments = dict(parse_arguments(raw))
    spec = function_specs(tools).get(name) if tools else None
    if spec:
        for key, prop in spec.get("parameters", {}).get("properties", {}).items():
            if key not in arguments and "default" in prop:
                arguments[key] = prop["default"]
    return name, normalize_value(arguments)
