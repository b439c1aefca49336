"""Turn one choice's generated text into OpenAI chat output, streamed or whole.

`ChoiceAssembler` feeds the text the engine produces (in whatever pieces it arrives, several
tokens at once with MTP) to the chat `StreamParser` and converts its deltas:
reasoning -> `reasoning_content` (and the same text as `reasoning`, the name some clients read),
content -> `content`, tool calls -> `tool_calls` fragments (index, id, type and name in the
first; argument fragments after). The same object then gives the complete message for a
non-streamed response, so both paths share one parse.
"""

from __future__ import annotations

import json
from typing import Any

from glm45.chat import StreamParser
from glm45.serve.prompting import ChatPlan

THINK_OPEN = "<think>"


class ChoiceAssembler:
    def __init__(self, index: int, plan: ChatPlan) -> None:
        self.index = index
        self.keep_tool_calls = plan.keep_tool_calls
        self.enable_thinking = plan.enable_thinking
        self.parser = StreamParser(plan.tools, enable_thinking=plan.enable_thinking)
        self._prefill = plan.prefill  # the answer's forced start, parsed before the first generated text
        self._head = ""  # the first generated characters, to see whether a think block opens the output
        self.finish_reason: str | None = None

    def feed(self, text: str) -> list[dict[str, Any]]:
        """OpenAI delta dicts for this piece of generated text (possibly none)."""
        if len(self._head) < 64:
            self._head += text[:64]
        chunk, self._prefill = self._prefill + text, ""
        return self._convert(self.parser.feed(chunk)) if chunk else []

    def finish(self, engine_reason: str | None) -> list[dict[str, Any]]:
        """The last deltas; sets `finish_reason` ("tool_calls" when the answer ended in calls)."""
        deltas = self.feed("") if self._prefill else []
        deltas += self._convert(self.parser.finish())
        reason = engine_reason or "stop"
        if reason == "stop" and self.keep_tool_calls and self.parser.result["tool_calls"]:
            reason = "tool_calls"
        self.finish_reason = reason
        return deltas

    def _convert(self, deltas: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for d in deltas:
            if "reasoning_content" in d:
                out.append({"reasoning_content": d["reasoning_content"], "reasoning": d["reasoning_content"]})
            elif "content" in d:
                out.append({"content": d["content"]})
            elif "tool_calls" in d and self.keep_tool_calls:
                out.append({"tool_calls": d["tool_calls"]})
        return out

    def message(self) -> dict[str, Any]:
        """The complete assistant message (call after `finish`)."""
        result = self.parser.result
        calls = result["tool_calls"] if self.keep_tool_calls else []
        tool_calls = [{"id": self.parser.tool_call_ids[i], "type": "function",
                       "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}}
                      for i, c in enumerate(calls)]
        content = result["content"]
        reasoning = result["reasoning_content"]
        return {"role": "assistant", "content": content if content or not tool_calls else None,
                "reasoning_content": reasoning, "reasoning": reasoning, "tool_calls": tool_calls or None}

    def reasoning_tokens(self, token_ids: list[int], think_close_id: int) -> int:
        """Generated tokens that belong to the think block opening the output (through `</think>`;
        all of them when it was never closed)."""
        if not self.enable_thinking or not self._head.lstrip().startswith(THINK_OPEN):
            return 0
        try:
            return token_ids.index(think_close_id) + 1
        except ValueError:
            return len(token_ids)
