"""Strict check of the tool-call markup a model wrote (for the paper's "FormatCorrect").

`glm45.chat.parse` is deliberately forgiving (it must never fail while serving): it drops a
nameless call, a key without a value, stray text between tags. A reward must not be: any
deviation from the template's grammar is a format error.

    <tool_call>NAME
    <arg_key>KEY</arg_key>
    <arg_value>VALUE</arg_value>
    ...
    </tool_call>

Rules: a call opens with `<tool_call>`, a one-line name, then zero or more key/value pairs
(only whitespace between the tags), then `</tool_call>`; keys are non-empty and unique in a call;
a value is everything up to `</arg_value>` (it may hold markup); no argument tag appears outside
a call; the output does not end inside a call. With `tools`, each call must also name an offered
tool and satisfy its JSON schema (arguments decoded as `glm45.chat.parse` decodes them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from glm45.chat import parse
from glm45.tasks.tool_schema import validate_call

__all__ = ["FormatCheck", "check_tool_calls"]

_TAGS = re.compile(r"(</?tool_call>|</?arg_key>|</?arg_value>)")
OUT, NAME, KEY, AFTER_KEY, VALUE, BODY = range(6)
_EXPECTED = {NAME: "<arg_key> or </tool_call>", KEY: "</arg_key>", AFTER_KEY: "<arg_value>",
             BODY: "<arg_key> or </tool_call>"}


@dataclass
class FormatCheck:
    calls: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "arguments"}], decoded
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _markup_errors(text: str) -> tuple[int, list[str]]:
    """(number of well-formed calls, grammar errors)."""
    parts = _TAGS.split(text)  # text, tag, text, tag, ..., text
    state, n_calls, errors = OUT, 0, []
    keys: set[str] = set()
    for i in range(0, len(parts), 2):
        chunk = parts[i]
        tag = parts[i + 1] if i + 1 < len(parts) else None
        if state == NAME:
            name = chunk.strip()
            if not name or "\n" in name or any(c.isspace() for c in name):
                errors.append(f"call {n_calls}: bad function name {chunk.strip()[:80]!r}")
        elif state == KEY:
            key = chunk.strip()
            if not key:
                errors.append(f"call {n_calls}: empty argument key")
            elif key in keys:
                errors.append(f"call {n_calls}: argument {key!r} given twice")
            keys.add(key)
        elif state in (AFTER_KEY, BODY) and chunk.strip():
            errors.append(f"call {n_calls}: stray text {chunk.strip()[:80]!r} between argument tags")
        if tag is None:
            break
        if state == OUT:
            if tag == "<tool_call>":
                state, keys = NAME, set()
            else:
                errors.append(f"{tag} outside a tool call")
        elif state == VALUE:
            if tag == "</arg_value>":
                state = BODY
            # any other tag inside a value is part of the value
        elif state in (NAME, BODY) and tag == "</tool_call>":
            state, n_calls = OUT, n_calls + 1
        elif state in (NAME, BODY) and tag == "<arg_key>":
            state = KEY
        elif state == KEY and tag == "</arg_key>":
            state = AFTER_KEY
        elif state == AFTER_KEY and tag == "<arg_value>":
            state = VALUE
        else:
            errors.append(f"call {n_calls}: expected {_EXPECTED[state]}, found {tag}")
            if tag == "<tool_call>":  # resynchronise on the next call
                state, keys = NAME, set()
                n_calls += 1
            else:
                state = OUT
    if state != OUT:
        errors.append(f"output ends inside tool call {n_calls} (cut off or unclosed)")
    return n_calls, errors


def check_tool_calls(text: str, tools: Sequence[Mapping] | None = None, *, enable_thinking: bool = True) -> FormatCheck:
    """The tool calls in a model output and every way their format is wrong (empty = correct)."""
    n_calls, errors = _markup_errors(text)
    parsed = parse(text, tools, enable_thinking=enable_thinking)
    calls = parsed["tool_calls"]
    if not errors and len(calls) != n_calls:
        errors.append(f"found {n_calls} tool-call blocks but {len(calls)} parse")
    if tools is not None:
        for j, call in enumerate(calls):
            errors += [f"call {j}: {problem}" for problem in validate_call(call, list(tools))]
    return FormatCheck(calls=calls, errors=errors)
