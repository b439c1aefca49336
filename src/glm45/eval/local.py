"""The local inference engine behind the evaluation harness's `Backend` protocol.

SFT data generation talks to models through `glm45.eval.backend.Backend` (`chat(requests) ->
results`), so the same code drives the in-process engine (`LocalBackend`) or any
OpenAI-compatible endpoint (`glm45.eval.OpenAIBackend`): a small local expert, or a strong
model served elsewhere. Requests are rendered with the chat template, generated in one
continuously batched `Engine.generate` call, and parsed with `glm45.chat.parse` into reasoning,
content and tool calls. Sample j of a request with seed s uses seed s + j, as every backend does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from glm45.chat import normalize_messages, parse
from glm45.eval.backend import ChatRequest, ChatResult, ChatSample, OnResult
from glm45.infer import Engine, SamplingParams


class LocalBackend:
    def __init__(self, engine: Engine, name: str = "local"):
        if engine.tokenizer is None:
            raise ValueError("LocalBackend needs an engine with a tokenizer (chat prompts are rendered to text)")
        self.engine = engine
        self.name = name

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **engine_kwargs) -> LocalBackend:
        return cls(Engine.from_pretrained(directory, **engine_kwargs), name=f"local:{os.fspath(directory)}")

    def chat(self, requests: Sequence[ChatRequest], on_result: OnResult | None = None) -> list[ChatResult]:
        prompts, params, where = [], [], []
        samples: list[list[ChatSample | None]] = [[None] * r.n for r in requests]
        limit = self.engine.max_seq_len
        for i, r in enumerate(requests):
            ids = self.engine.prompt_ids({"messages": normalize_messages(r.messages), "tools": r.tools,
                                          "enable_thinking": r.enable_thinking})
            for j in range(r.n):
                if len(ids) >= limit - 1:  # no room to generate: report it as cut off
                    samples[i][j] = ChatSample(finish_reason="length")
                    continue
                prompts.append(ids)
                params.append(SamplingParams(max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p,
                                             seed=None if r.seed is None else r.seed + j))
                where.append((i, j))
        results = self.engine.generate(prompts, params) if prompts else []
        for (i, j), res in zip(where, results):
            r = requests[i]
            samples[i][j] = to_sample(res.text, r.tools, r.enable_thinking, res.finish_reason, len(res.token_ids))
        out = [ChatResult(list(s)) for s in samples]
        if on_result is not None:
            for i, result in enumerate(out):
                on_result(i, result)
        return out


def to_sample(text: str, tools, enable_thinking: bool, finish_reason: str, n_tokens: int) -> ChatSample:
    """A generated text as a ChatSample. A tool call cut off mid-way is kept with its raw text as
    `invalid_arguments`, so protocol checks see it (a tool never runs it)."""
    parsed = parse(text, tools, enable_thinking=enable_thinking)
    calls = [dict(c) for c in parsed["tool_calls"]]
    if parsed["incomplete_tool_call"] is not None:
        cut = parsed["incomplete_tool_call"]
        calls.append({"name": cut["name"] or "", "arguments": cut["arguments"], "invalid_arguments": cut["raw"]})
    return ChatSample(content=parsed["content"], reasoning_content=parsed["reasoning_content"] or "",
                      tool_calls=calls, finish_reason=finish_reason, completion_tokens=n_tokens)
