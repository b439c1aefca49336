"""From a validated chat request to the prompt the model continues.

Messages go through `glm45.chat.normalize_messages`: `developer` becomes `system`, text parts
are joined, `content: null` becomes "" (the template would print "None"), and tool-call
arguments sent as JSON strings become dicts (protocol.py already made a bad one a 400).

tool_choice:
- "auto" (the default when tools are given): the tools are rendered into the system prompt and
  the model decides.
- "none": the tools are not offered (not rendered), and any call the model writes anyway is
  dropped from the answer (finish_reason stays "stop").
- "required" / a named function: the call is enforced by prefilling the assistant turn. The turn
  is rendered with thinking off (the call must come first, and `<think></think>` is how the model
  was trained to skip reasoning) and the generation starts after `\\n<tool_call>` — plus the
  function's name and a newline for a named choice — so the first thing generated is the call
  (its name, or directly its arguments). The prefill is fed to the output parser before the
  generated text, so clients see a normal tool call, name included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from glm45.chat import normalize_messages, render
from glm45.serve.protocol import ChatCompletionRequest, NamedToolChoice


@dataclass
class ChatPlan:
    prompt: str  # rendered conversation + generation prompt + prefill: what the model continues
    prefill: str  # the part of `prompt` that belongs to the assistant's answer (fed to the parser)
    enable_thinking: bool
    tools: list[dict[str, Any]] | None  # tools offered to the model, as the client sent them
    keep_tool_calls: bool  # False for tool_choice "none" or no tools


def plan_chat(req: ChatCompletionRequest, raw_messages: list[dict], raw_tools: list[dict] | None,
              default_thinking: bool) -> ChatPlan:
    """`raw_messages` / `raw_tools`: the request's lists exactly as received (already validated
    as `req`), so tools render byte for byte as sent and argument key order is kept.
    Raises `glm45.chat.ChatFormatError` (a ValueError) for what the chat format cannot hold."""
    kwargs = req.chat_template_kwargs
    thinking = default_thinking if kwargs is None or kwargs.enable_thinking is None else kwargs.enable_thinking
    choice = req.tool_choice
    offered = raw_tools if raw_tools and choice != "none" else None
    prefill = ""
    if choice == "required" or isinstance(choice, NamedToolChoice):
        thinking = False
        prefill = "\n<tool_call>" + (choice.function.name + "\n" if isinstance(choice, NamedToolChoice) else "")
    prompt = render(normalize_messages(raw_messages), offered, enable_thinking=thinking, add_generation_prompt=True)
    return ChatPlan(prompt=prompt + prefill, prefill=prefill, enable_thinking=thinking, tools=offered,
                    keep_tool_calls=offered is not None)
