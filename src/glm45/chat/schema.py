"""What the declared tools say about argument types, for decoding tool-call values.

The model writes every argument value as text between <arg_value> tags: strings raw, other
values as JSON. Only the tool's JSON schema can tell "123" the string from 123 the number, so
parameters declared as strings keep the exact text and everything else is JSON-decoded.
Malformed tool declarations are ignored here (parsing never fails on them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def _is_string_schema(schema: Any) -> bool:
    """True when every value the schema allows (besides null) is a string."""
    if not isinstance(schema, Mapping):
        return False
    t = schema.get("type")
    if isinstance(t, str):
        return t == "string"
    if isinstance(t, list):
        kinds = [k for k in t if k != "null"]
        return bool(kinds) and all(k == "string" for k in kinds)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            return bool(non_null) and all(_is_string_schema(o) for o in non_null)
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return all(isinstance(v, str) for v in enum)
    return False


class ToolSchemas:
    """Parameter schemas by tool name, from OpenAI-style tool declarations."""

    def __init__(self, tools: Sequence[Mapping] | None = None) -> None:
        self._params: dict[str, Mapping] = {}
        if not isinstance(tools, Sequence) or isinstance(tools, (str, bytes)):
            return
        for tool in tools:
            if not isinstance(tool, Mapping):
                continue
            fn = tool.get("function", tool)  # {"type": "function", "function": {...}} or the bare function
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                continue
            params = fn.get("parameters")
            props = params.get("properties") if isinstance(params, Mapping) else None
            self._params[fn["name"]] = props if isinstance(props, Mapping) else {}

    def is_string(self, tool: str | None, key: str) -> bool:
        """Whether `key` of `tool` is declared as a string parameter."""
        props = self._params.get(tool) if tool is not None else None
        return props is not None and _is_string_schema(props.get(key))

    def decode(self, tool: str | None, key: str, raw: str) -> Any:
        """The value of an argument from its raw text."""
        if self.is_string(tool, key):
            return raw
        try:
            return json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            return raw


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; such a value stays the raw text.
    raise ValueError(f"{name} is not valid JSON")
