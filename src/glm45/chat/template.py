"""The GLM-4.5 chat format: the official Jinja chat template and a Python renderer equal to it.

`CHAT_TEMPLATE` is the template text the released GLM-4.5 tokenizer_config.json carries; glm45
writes it into every tokenizer_config.json so `transformers` renders prompts the same way.
`render` produces the same string without Jinja (tests compare the two on many conversations),
and also reports which characters the assistant produced, for training masks (`render_pieces`).

Where the template would fail, `render` accepts more: tool-call arguments given as a JSON
string (parsed to a dict first) or left out (no arguments). Everything the template accepts
renders byte for byte as `transformers.apply_chat_template` renders it, quirks included: a key
set to None counts as absent (transformers drops them, so `content: None` renders as empty),
unknown roles render nothing, and a tool message whose content is a list writes each item
(its `output`, else the item itself, dicts as Python reprs) in its own <tool_response>. Use
`glm45.chat.normalize_messages` to turn OpenAI-style requests into clean messages first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

# The official template (released with GLM-4.5; rendered with trim_blocks and lstrip_blocks,
# as transformers does). Kept verbatim: any change here changes what the model sees.
CHAT_TEMPLATE = r"""[gMASK]<sop>
{%- if tools -%}
<|system|>
# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{% for tool in tools %}
{{ tool | tojson(ensure_ascii=False) }}
{% endfor %}
</tools>

For each function call, output the function name and arguments within the following XML format:
<tool_call>{function-name}
<arg_key>{arg-key-1}</arg_key>
<arg_value>{arg-value-1}</arg_value>
<arg_key>{arg-key-2}</arg_key>
<arg_value>{arg-value-2}</arg_value>
...
</tool_call>{%- endif -%}
{%- macro visible_text(content) -%}
    {%- if content is string -%}
        {{- content }}
    {%- elif content is iterable and content is not mapping -%}
        {%- for item in content -%}
            {%- if item is mapping and item.type == 'text' -%}
                {{- item.text }}
            {%- elif item is string -%}
                {{- item }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{- content }}
    {%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(last_user_index=-1) %}
{%- for m in messages %}
    {%- if m.role == 'user' %}
        {% set ns.last_user_index = loop.index0 -%}
    {%- endif %}
{%- endfor %}
{% for m in messages %}
{%- if m.role == 'user' -%}<|user|>
{% set content = visible_text(m.content) %}{{ content }}
{{- '/nothink' if (enable_thinking is defined and not enable_thinking and not content.endswith("/nothink")) else '' -}}
{%- elif m.role == 'assistant' -%}
<|assistant|>
{%- set reasoning_content = '' %}
{%- set content = visible_text(m.content) %}
{%- if m.reasoning_content is string %}
    {%- set reasoning_content = m.reasoning_content %}
{%- else %}
    {%- if '</think>' in content %}
        {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
        {%- set content = content.split('</think>')[-1].lstrip('\n') %}
    {%- endif %}
{%- endif %}
{%- if loop.index0 > ns.last_user_index and reasoning_content -%}
{{ '\n<think>' + reasoning_content.strip() +  '</think>'}}
{%- else -%}
{{ '\n<think></think>' }}
{%- endif -%}
{%- if content.strip() -%}
{{ '\n' + content.strip() }}
{%- endif -%}
{% if m.tool_calls %}
{% for tc in m.tool_calls %}
{%- if tc.function %}
    {%- set tc = tc.function %}
{%- endif %}
{{ '\n<tool_call>' + tc.name }}
{% set _args = tc.arguments %}
{% for k, v in _args.items() %}
<arg_key>{{ k }}</arg_key>
<arg_value>{{ v | tojson(ensure_ascii=False) if v is not string else v }}</arg_value>
{% endfor %}
</tool_call>{% endfor %}
{% endif %}
{%- elif m.role == 'tool' -%}
{%- if m.content is string -%}
{%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
    {{- '<|observation|>' }}
{%- endif %}
{{- '\n<tool_response>\n' }}
{{- m.content }}
{{- '\n</tool_response>' }}
{%- else -%}
<|observation|>{% for tr in m.content %}

<tool_response>
{{ tr.output if tr.output is defined else tr }}
</tool_response>{% endfor -%}
{% endif -%}
{%- elif m.role == 'system' -%}
<|system|>
{{ visible_text(m.content) }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    <|assistant|>{{- '\n<think></think>' if (enable_thinking is defined and not enable_thinking) else '' -}}
{%- endif -%}"""

TOOLS_HEADER = (
    "<|system|>\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
TOOLS_FOOTER = (
    "</tools>\n\nFor each function call, output the function name and arguments within the following "
    "XML format:\n<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}"
    "</arg_value>\n<arg_key>{arg-key-2}</arg_key>\n<arg_value>{arg-value-2}</arg_value>\n...\n</tool_call>"
)
EMPTY_THINK = "\n<think></think>"
# Names a message's reasoning may come under; transformers copies the first one set into
# `reasoning_content` before rendering, so render does the same.
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class ChatFormatError(ValueError):
    """A message, tool or tool call cannot be rendered in the GLM-4.5 chat format."""


class Piece(NamedTuple):
    """A run of the rendered string; `trained` marks text the assistant produced."""

    text: str
    trained: bool


_MISSING = object()  # a key the message lacks (Jinja's Undefined: renders as "", iterates as empty)


def _jinja_str(value: Any) -> str:
    """What `{{ value }}` prints: Python's str() (None -> "None", True -> "True", dicts as repr)."""
    return "" if value is _MISSING else str(value)


def _visible_text(content: Any) -> str:
    """The template's visible_text macro: strings as-is, text parts of a list joined."""
    if isinstance(content, str):
        return content
    if content is _MISSING:
        return ""
    if isinstance(content, (list, tuple)):
        parts = []
        for item in content:
            if isinstance(item, Mapping) and item.get("type") == "text":
                parts.append(_jinja_str(item.get("text", _MISSING)))
            elif isinstance(item, str):
                parts.append(item)
        return "".join(parts)
    return _jinja_str(content)


def _tojson(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ChatFormatError(f"{what} is not JSON-serialisable: {e}") from e


def tool_call_arguments(arguments: Any, where: str) -> Mapping:
    """Arguments of a tool call as a mapping: a dict as-is, a JSON object string parsed."""
    if arguments is None or arguments is _MISSING:
        return {}
    if isinstance(arguments, str):
        if not arguments.strip():
            return {}
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as e:
            raise ChatFormatError(f"{where}: arguments string is not valid JSON ({e.msg} at char {e.pos})") from e
    if not isinstance(arguments, Mapping):
        raise ChatFormatError(f"{where}: arguments must be a JSON object, got {type(arguments).__name__}")
    return arguments


def _reasoning_field(m: Mapping) -> Any:
    return next((m[k] for k in REASONING_FIELDS if m.get(k) is not None), _MISSING)


def _split_inline_think(content: str) -> tuple[str, str]:
    """(reasoning, content) from `<think>…</think>` written inside content, as the template does."""
    reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
    return reasoning, content.split("</think>")[-1].lstrip("\n")


def _render_tool_calls(tool_calls: Any, where: str) -> str:
    if not isinstance(tool_calls, (list, tuple)):
        raise ChatFormatError(f"{where}: tool_calls must be a list, got {type(tool_calls).__name__}")
    out = []
    for j, tc in enumerate(tool_calls):
        here = f"{where}, tool call {j}"
        if not isinstance(tc, Mapping):
            raise ChatFormatError(f"{here}: must be an object, got {type(tc).__name__}")
        if tc.get("function"):
            tc = tc["function"]
            if not isinstance(tc, Mapping):
                raise ChatFormatError(f"{here}: 'function' must be an object")
        name = tc.get("name")
        if not isinstance(name, str):
            raise ChatFormatError(f"{here}: needs a string 'name', got {name!r}")
        out.append("\n<tool_call>" + name + "\n")
        for k, v in tool_call_arguments(tc.get("arguments", _MISSING), here).items():
            value = v if isinstance(v, str) else _tojson(v, f"{here}: argument {k!r}")
            out.append(f"<arg_key>{_jinja_str(k)}</arg_key>\n<arg_value>{value}</arg_value>\n")
        out.append("</tool_call>")
    return "".join(out)


def _render_tool_list(content: Any, where: str) -> str:
    """A tool message whose content is not a string: each item in its own <tool_response>."""
    if content is _MISSING:
        content = ()
    if isinstance(content, Mapping):
        content = list(content)  # Jinja iterates a mapping's keys
    if not isinstance(content, (list, tuple)):
        raise ChatFormatError(f"{where}: tool content must be a string or a list, got {type(content).__name__}")
    out = []
    for tr in content:
        text = _jinja_str(tr["output"]) if isinstance(tr, Mapping) and "output" in tr else _jinja_str(tr)
        out.append("\n<tool_response>\n" + text + "\n</tool_response>")
    return "".join(out)


def render_pieces(messages: Sequence[Mapping], tools: Sequence[Mapping] | None = None, *,
                  enable_thinking: bool = True, add_generation_prompt: bool = False) -> list[Piece]:
    """`render`'s string cut into pieces, marking those the assistant produced.

    Trained: each assistant turn after its <|assistant|> token (reasoning, content, tool calls;
    with thinking off, not the empty think block the prompt supplies), and the <|user|> or
    <|observation|> token right after an assistant turn, which is how the model ends a turn.
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ChatFormatError(f"messages must be a list of message objects, got {type(messages).__name__}")
    thinking = bool(enable_thinking)
    pieces = [Piece("[gMASK]<sop>", False)]
    if tools:
        if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
            raise ChatFormatError(f"tools must be a list of tool objects, got {type(tools).__name__}")
        lines = "".join(_tojson(t, f"tool {i}") + "\n" for i, t in enumerate(tools))
        pieces.append(Piece(TOOLS_HEADER + lines + TOOLS_FOOTER, False))

    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ChatFormatError(f"message {i} must be an object, got {type(m).__name__}")
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)

    prev_role = None
    for i, m in enumerate(messages):
        where = f"message {i}"
        role = m.get("role")
        after_assistant = prev_role == "assistant"
        prev_role = role
        content = m.get("content", _MISSING)
        if role == "user":
            text = _visible_text(content)
            if not thinking and not text.endswith("/nothink"):
                text += "/nothink"
            pieces += [Piece("<|user|>", after_assistant), Piece("\n" + text, False)]
        elif role == "system":
            pieces.append(Piece("<|system|>\n" + _visible_text(content), False))
        elif role == "assistant":
            pieces.append(Piece("<|assistant|>", False))
            text = _visible_text(content)
            reasoning = _reasoning_field(m)
            if not isinstance(reasoning, str):
                reasoning = ""
                if "</think>" in text:
                    reasoning, text = _split_inline_think(text)
            if i > last_user and reasoning:
                pieces.append(Piece("\n<think>" + reasoning.strip() + "</think>", True))
            else:
                pieces.append(Piece(EMPTY_THINK, thinking))  # with thinking off the prompt supplies it
            body = "\n" + text.strip() if text.strip() else ""
            if m.get("tool_calls"):
                body += _render_tool_calls(m["tool_calls"], where)
            if body:
                pieces.append(Piece(body, True))
        elif role == "tool":
            if isinstance(content, str):
                if i == 0 or messages[i - 1].get("role") != "tool":
                    pieces.append(Piece("<|observation|>", after_assistant))
                pieces.append(Piece("\n<tool_response>\n" + content + "\n</tool_response>", False))
            else:
                pieces += [Piece("<|observation|>", after_assistant), Piece(_render_tool_list(content, where), False)]
        # any other role renders nothing, as in the template
    if add_generation_prompt:
        pieces.append(Piece("<|assistant|>" + ("" if thinking else EMPTY_THINK), False))
    return pieces


def render(messages: Sequence[Mapping], tools: Sequence[Mapping] | None = None, *,
           enable_thinking: bool = True, add_generation_prompt: bool = False) -> str:
    """The prompt string the official GLM-4.5 chat template renders for these messages."""
    pieces = render_pieces(messages, tools, enable_thinking=enable_thinking,
                           add_generation_prompt=add_generation_prompt)
    return "".join(p.text for p in pieces)
