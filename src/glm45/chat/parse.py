"""Parse GLM-4.5 model output into reasoning, content and tool calls, whole or streamed.

What the model writes after `<|assistant|>` (thinking on; with thinking off the prompt already
ends in `<think></think>` and the output is content only):

    \\n<think>REASONING</think>\\nCONTENT\\n<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>\\n</tool_call>

One state machine does both jobs: `parse(text)` feeds the whole text to a `StreamParser`.
The machine only acts on text it can classify: when the buffer ends in what may be the start of
a tag (`<`, `<tool_c`, ...) that part waits for the next chunk. So every split of the text into
chunks leads to the same final result, markup never reaches content while a tag is undecided,
and several tags arriving in one chunk (multi-token decoding) are all handled.

Rules:
- Reasoning is the text of a `<think>` block opening the output (after whitespace); if it is
  never closed, all the rest is reasoning. Without it (or with thinking off) there is none
  (`reasoning_content` None, also when the block is empty).
- Content is all other text outside tool calls, stripped of surrounding whitespace (the template
  writes it stripped). Reasoning is stripped the same way.
- A `<tool_call>` block is a call wherever it appears, inside `<think>` too. Its name is the first
  line of the text before the first `<arg_key>` / `</tool_call>`; a block without a name is
  dropped. Keys are stripped. A value is everything up to `</arg_value>` (so it may hold newlines,
  quotes, backslashes, `</tool_call>` or other XML); it is decoded with the tool's schema (see
  schema.py). A key without a value is dropped; a `<tool_call>` where `</tool_call>` was
  expected closes the call and opens the next.
- Output cut off inside a call gives no call: `incomplete_tool_call` holds its name, the
  arguments completed so far, and its raw text.

Stream deltas are OpenAI-style: `{"reasoning_content": str}`, `{"content": str}`, and
`{"tool_calls": [{"index", "id", "type": "function", "function": {"name", "arguments"}}]}` for a
call's header then `{"tool_calls": [{"index", "function": {"arguments": fragment}}]}`. Argument
fragments are sent as each value completes (string-typed values stream as their characters
arrive); a finished call's fragments join into JSON equal to its arguments. A call cut off by
the end of output has had its header and some fragments sent; `result["incomplete_tool_call"]`
then says so (like OpenAI's finish_reason "length", the fragments stop mid-object).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from glm45.chat.schema import ToolSchemas

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
KEY_OPEN, KEY_CLOSE = "<arg_key>", "</arg_key>"
VALUE_OPEN, VALUE_CLOSE = "<arg_value>", "</arg_value>"

# Parser states.
START, THINK, CONTENT, NAME, BODY, KEY, AFTER_KEY, VALUE = range(8)

# The tags that end a run of text in each state (START is handled apart).
TERMINATORS: dict[int, tuple[str, ...]] = {
    THINK: (THINK_CLOSE, CALL_OPEN),
    CONTENT: (CALL_OPEN,),
    NAME: (KEY_OPEN, CALL_CLOSE),
    BODY: (KEY_OPEN, CALL_CLOSE, CALL_OPEN),
    KEY: (KEY_CLOSE, VALUE_OPEN, CALL_CLOSE),
    AFTER_KEY: (VALUE_OPEN, KEY_OPEN, CALL_CLOSE),
    VALUE: (VALUE_CLOSE,),
}
_PATTERNS = {s: re.compile("|".join(map(re.escape, tags))) for s, tags in TERMINATORS.items()}


def _held_back(buf: str, start: int, tags: tuple[str, ...]) -> int:
    """Length of the tail of buf[start:] that may be the beginning of one of `tags`.

    Every tag has a single '<', at its start, so such a tail starts at the last '<'.
    """
    lo = max(start, len(buf) - max(map(len, tags)) + 1)
    k = buf.rfind("<", lo)
    if k < 0:
        return 0
    tail = buf[k:]
    return len(tail) if any(t.startswith(tail) for t in tags) else 0


class _Stripped:
    """Text sent piecewise whose total must equal the stripped concatenation of all pushes.

    Leading whitespace is dropped, whitespace inside is sent once more text follows it, and
    trailing whitespace is never sent.
    """

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._pending = ""

    def push(self, text: str) -> str:
        if not self.parts:
            text = text.lstrip()
        body = text.rstrip()
        if not body:
            if self.parts:
                self._pending += text
            return ""
        out = self._pending + body
        self._pending = text[len(body):]
        self.parts.append(out)
        return out

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class _Call:
    outer: int  # the state to go back to after the call (THINK or CONTENT)
    start: int  # offset of its <tool_call> in the whole output
    name_buf: list[str] = field(default_factory=list)
    name: str | None = None
    index: int | None = None  # stream index once the header is sent; None for a nameless call
    arguments: dict[str, Any] = field(default_factory=dict)
    key_buf: list[str] = field(default_factory=list)
    key: str | None = None
    value_buf: list[str] = field(default_factory=list)
    streaming: bool = False  # the open value is streamed as a JSON string
    sent_any: bool = False  # the '{' of the arguments has been sent


def _first_line(parts: list[str]) -> str:
    return "".join(parts).strip().split("\n", 1)[0].strip()


def new_tool_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


class StreamParser:
    """Incremental parser: `feed(chunk) -> deltas`, `finish() -> deltas`, `.result`."""

    def __init__(self, tools: Sequence[Mapping] | None = None, enable_thinking: bool = True) -> None:
        self._schemas = ToolSchemas(tools)
        self._state = START if enable_thinking else CONTENT
        self._buf = ""
        self._consumed = 0  # characters of the output before self._buf
        self._consumed_at = 0  # offset of the tag being handled
        self._chunks: list[str] = []
        self._reasoning = _Stripped()
        self._content = _Stripped()
        self._think_seen = False
        self._call: _Call | None = None
        self._calls: list[dict[str, Any]] = []
        self._incomplete: dict[str, Any] | None = None
        self._out: list[dict[str, Any]] = []
        self._finished = False
        self.tool_call_ids: list[str] = []  # one per call header sent, by stream index

    # ---- public ---------------------------------------------------------------------------
    def feed(self, chunk: str) -> list[dict[str, Any]]:
        if self._finished:
            raise RuntimeError("StreamParser.feed() called after finish()")
        if not isinstance(chunk, str):
            raise TypeError(f"StreamParser.feed expects str, got {type(chunk).__name__}")
        if chunk:
            self._chunks.append(chunk)
            self._buf += chunk
            self._run(final=False)
        return self._take()

    def finish(self) -> list[dict[str, Any]]:
        """End of output: classify what was held back and report a cut-off call."""
        if not self._finished:
            self._finished = True
            self._run(final=True)
            call = self._call
            if call is not None:
                self._incomplete = {
                    "name": _first_line(call.name_buf) or None,
                    "arguments": dict(call.arguments),
                    "raw": "".join(self._chunks)[call.start:],
                }
        return self._take()

    @property
    def result(self) -> dict[str, Any]:
        """Same shape as `parse`: reasoning_content, content, tool_calls, incomplete_tool_call."""
        reasoning = self._reasoning.text if self._think_seen else ""
        return {
            "reasoning_content": reasoning or None,
            "content": self._content.text,
            "tool_calls": [{"name": c["name"], "arguments": dict(c["arguments"])} for c in self._calls],
            "incomplete_tool_call": self._incomplete,
        }

    # ---- the state machine ------------------------------------------------------------------
    def _run(self, final: bool) -> None:
        buf, i = self._buf, 0
        while True:
            if self._state == START:
                while i < len(buf) and buf[i].isspace():
                    i += 1
                if buf.startswith(THINK_OPEN, i):
                    i += len(THINK_OPEN)
                    self._think_seen = True
                    self._state = THINK
                elif i == len(buf) or (THINK_OPEN.startswith(buf[i:]) and not final):
                    break  # nothing yet, or maybe the start of <think>
                else:
                    self._state = CONTENT
                continue
            m = _PATTERNS[self._state].search(buf, i)
            if m is not None:
                self._text(buf[i:m.start()])
                self._consumed_at = self._consumed + m.start()
                i = m.end()
                self._tag(m.group())
                continue
            end = len(buf) if final else len(buf) - _held_back(buf, i, TERMINATORS[self._state])
            self._text(buf[i:end])
            i = end
            break
        self._consumed += i
        self._buf = buf[i:]

    def _text(self, text: str) -> None:
        if not text:
            return
        state, call = self._state, self._call
        if state == THINK:
            self._emit_text("reasoning_content", self._reasoning.push(text))
        elif state == CONTENT:
            self._emit_text("content", self._content.push(text))
        elif state == NAME:
            call.name_buf.append(text)
        elif state == KEY:
            call.key_buf.append(text)
        elif state == VALUE:
            call.value_buf.append(text)
            if call.streaming:
                self._emit_args(call, json.dumps(text, ensure_ascii=False)[1:-1])
        # BODY and AFTER_KEY: stray text between tags is ignored

    def _tag(self, tag: str) -> None:
        state, call = self._state, self._call
        if state == THINK and tag == THINK_CLOSE:
            self._state = CONTENT
        elif tag == CALL_OPEN and state in (THINK, CONTENT):
            self._start_call(state)
        elif state == NAME:  # <arg_key> or </tool_call>
            self._name_done(call)
            if tag == KEY_OPEN:
                self._state = KEY
            else:
                self._end_call(call)
        elif state == BODY:
            if tag == KEY_OPEN:
                self._state = KEY
            else:
                self._end_call(call)
                if tag == CALL_OPEN:  # a missing </tool_call>: the next call starts here
                    self._start_call(call.outer)
        elif state == KEY:
            call.key, call.key_buf = "".join(call.key_buf).strip(), []
            if tag == KEY_CLOSE:
                self._state = AFTER_KEY
            elif tag == VALUE_OPEN:
                self._open_value(call)
            else:
                self._end_call(call)
        elif state == AFTER_KEY:
            if tag == VALUE_OPEN:
                self._open_value(call)
            elif tag == KEY_OPEN:
                self._state = KEY
            else:
                self._end_call(call)
        elif state == VALUE:
            self._close_value(call)

    # ---- tool calls -------------------------------------------------------------------------
    def _start_call(self, outer: int) -> None:
        self._call = _Call(outer=outer, start=self._consumed_at)
        self._state = NAME

    def _name_done(self, call: _Call) -> None:
        call.name = _first_line(call.name_buf)
        if call.name:
            call.index = len(self.tool_call_ids)
            self.tool_call_ids.append(new_tool_call_id())
            self._out.append({"tool_calls": [{
                "index": call.index, "id": self.tool_call_ids[-1], "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }]})

    def _arg_prefix(self, call: _Call, key: str) -> str:
        prefix = ", " if call.sent_any else "{"
        call.sent_any = True
        return prefix + json.dumps(key, ensure_ascii=False) + ": "

    def _open_value(self, call: _Call) -> None:
        self._state = VALUE
        call.value_buf = []
        call.streaming = call.index is not None and self._schemas.is_string(call.name, call.key)
        if call.streaming:
            self._emit_args(call, self._arg_prefix(call, call.key) + '"')

    def _close_value(self, call: _Call) -> None:
        raw = "".join(call.value_buf)
        value = self._schemas.decode(call.name, call.key, raw)
        call.arguments[call.key] = value
        if call.streaming:
            self._emit_args(call, '"')
        elif call.index is not None:
            self._emit_args(call, self._arg_prefix(call, call.key) + json.dumps(value, ensure_ascii=False))
        call.key, call.value_buf, call.streaming = None, [], False
        self._state = BODY

    def _end_call(self, call: _Call) -> None:
        if call.index is not None:
            self._emit_args(call, "}" if call.sent_any else "{}")
            self._calls.append({"name": call.name, "arguments": call.arguments})
        self._call = None
        self._state = call.outer

    # ---- deltas -----------------------------------------------------------------------------
    def _emit_text(self, kind: str, text: str) -> None:
        if not text:
            return
        last = self._out[-1] if self._out else None
        if last is not None and kind in last:
            last[kind] += text
        else:
            self._out.append({kind: text})

    def _emit_args(self, call: _Call, fragment: str) -> None:
        if call.index is None or not fragment:
            return
        last = self._out[-1] if self._out else None
        if last is not None and "tool_calls" in last and last["tool_calls"][0]["index"] == call.index:
            last["tool_calls"][0]["function"]["arguments"] += fragment
        else:
            self._out.append({"tool_calls": [{"index": call.index, "function": {"arguments": fragment}}]})

    def _take(self) -> list[dict[str, Any]]:
        out, self._out = self._out, []
        return out


def parse(text: str | bytes, tools: Sequence[Mapping] | None = None, *, enable_thinking: bool = True) -> dict[str, Any]:
    """Split a complete model output into reasoning_content, content and tool_calls.

    Never raises on any text (bytes are decoded as UTF-8, invalid bytes replaced). The result
    also has `incomplete_tool_call` (None, or the call the output was cut off in).
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TypeError(f"parse expects str or bytes, got {type(text).__name__}")
    parser = StreamParser(tools, enable_thinking=enable_thinking)
    parser.feed(text)
    parser.finish()
    return parser.result
