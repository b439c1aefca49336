"""Turn OpenAI-style chat messages into the clean form the GLM-4.5 template expects.

Requests to an OpenAI-compatible server (and many chat datasets) carry shapes the template
renders badly or not at all: `content: null` next to tool calls (plain Jinja prints "None";
transformers drops the key), content as a list of parts (a tool message's list would print as
Python reprs), tool-call arguments as JSON strings, the `developer` role.
`normalize_messages` rewrites those and rejects what a text-only model cannot take.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from glm45.chat.template import REASONING_FIELDS, ChatFormatError, tool_call_arguments

ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {"developer": "system"}
TEXT_PART_TYPES = ("text", "input_text", "output_text", "refusal")


def _text_of(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        out = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                out.append(part)
                continue
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind not in TEXT_PART_TYPES:
                raise ChatFormatError(f"{where}, content part {j}: type {kind!r} is not supported (text only)")
            text = part.get(kind if kind == "refusal" else "text")
            if not isinstance(text, str):
                raise ChatFormatError(f"{where}, content part {j}: needs a string {'text'!r}")
            out.append(text)
        return "".join(out)
    raise ChatFormatError(f"{where}: content must be a string or a list of text parts, got {type(content).__name__}")


def _tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, Sequence) or isinstance(calls, (str, bytes)):
        raise ChatFormatError(f"{where}: tool_calls must be a list")
    out = []
    for j, tc in enumerate(calls):
        here = f"{where}, tool call {j}"
        if not isinstance(tc, Mapping):
            raise ChatFormatError(f"{here}: must be an object")
        fn = tc.get("function", tc)
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
            raise ChatFormatError(f"{here}: needs a function name")
        call: dict[str, Any] = {
            "type": "function",
            "function": {"name": fn["name"], "arguments": dict(tool_call_arguments(fn.get("arguments"), here))},
        }
        if isinstance(tc.get("id"), str):
            call["id"] = tc["id"]
        out.append(call)
    return out


def normalize_messages(messages: Sequence[Mapping]) -> list[dict[str, Any]]:
    """Clean copies of OpenAI-style messages, ready for `render`.

    - `developer` becomes `system`; other unknown roles are an error.
    - Content becomes a string: None -> "", text parts joined; non-text parts are an error.
    - Assistant reasoning is read from `reasoning_content`, `thinking` or `reasoning`.
    - Tool-call arguments become dicts (JSON strings parsed); ids are kept.
    - A tool message keeps `tool_call_id` and `name`.
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ChatFormatError(f"messages must be a list of message objects, got {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        where = f"message {i}"
        if not isinstance(m, Mapping):
            raise ChatFormatError(f"{where}: must be an object, got {type(m).__name__}")
        role = ROLE_ALIASES.get(m.get("role"), m.get("role"))
        if role not in ROLES:
            raise ChatFormatError(f"{where}: role must be one of {', '.join(ROLES)} or developer, got {m.get('role')!r}")
        msg: dict[str, Any] = {"role": role, "content": _text_of(m.get("content"), where)}
        if role == "assistant":
            reasoning = next((m[k] for k in REASONING_FIELDS if m.get(k) is not None), None)
            if reasoning is not None:
                msg["reasoning_content"] = _text_of(reasoning, f"{where}, reasoning")
            if m.get("tool_calls"):
                msg["tool_calls"] = _tool_calls(m["tool_calls"], where)
        elif role == "tool":
            for key in ("tool_call_id", "name"):
                if isinstance(m.get(key), str):
                    msg[key] = m[key]
        out.append(msg)
    return out
