"""Sampling candidates from a model, prompt selection and response scaling (paper §3.1).

A prompt is a chat sample whose messages end with the user's turn; its `meta` carries what the
verifiers need and `enable_thinking` the mode to answer in. `sample_candidates` asks a backend
(the local engine or any OpenAI-compatible endpoint) for responses and turns each into a
candidate sample (prompt + assistant turn, finish reason and length in `meta`).

`rejection_sample` runs the paper's recipe:
1. a first pass of `first_pass` responses per prompt, filtered by the pipeline;
2. prompt selection: the prompts whose responses are shortest are dropped (`keep_fraction` of
   them are kept, the longest first; response length is the difficulty signal);
3. response scaling: the kept (hard) prompts get `k` responses in all, also filtered.
The result is every accepted response of a kept prompt, and a report with the pipeline counts
of both passes.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from glm45.data.document import Document
from glm45.eval.backend import Backend, ChatRequest, ChatSample
from glm45.sft.filters import FilterPipeline
from glm45.sft.records import SFTError


@dataclass
class SamplingConfig:
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int = 0


@dataclass
class RejectionConfig:
    first_pass: int = 1  # responses per prompt before selection
    k: int = 4  # responses per selected prompt after response scaling
    keep_fraction: float = 0.5  # of prompts, the longest-response ones
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.first_pass <= self.k:
            raise SFTError(f"need 1 <= first_pass <= k, got first_pass={self.first_pass}, k={self.k}")
        if not 0 < self.keep_fraction <= 1:
            raise SFTError(f"keep_fraction must lie in (0, 1], got {self.keep_fraction}")


def _prompt_seed(seed: int, prompt_id: str) -> int:
    digest = hashlib.blake2b(f"{seed}/{prompt_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % 2**30


def assistant_message(sample: ChatSample) -> dict[str, Any]:
    """A sampled response as an OpenAI-style assistant message (calls keep an
    `invalid_arguments` marker when their arguments could not be read)."""
    message: dict[str, Any] = {"role": "assistant", "content": sample.content}
    if sample.reasoning_content:
        message["reasoning_content"] = sample.reasoning_content
    if sample.tool_calls:
        calls = []
        for c in sample.tool_calls:
            call: dict[str, Any] = {"type": "function", "function": {"name": c.get("name", ""),
                                                                     "arguments": c.get("arguments") or {}}}
            if "invalid_arguments" in c:
                call["invalid_arguments"] = c["invalid_arguments"]
            calls.append(call)
        message["tool_calls"] = calls
    return message


def check_prompt(doc: Document) -> None:
    messages = doc.messages or []
    if not messages or messages[-1].get("role") != "user":
        raise SFTError(f"prompt {doc.id!r} must end with a user message")


def sample_candidates(prompts: Sequence[Document], backend: Backend, n: int, config: SamplingConfig,
                      *, offset: int = 0) -> list[Document]:
    """`n` responses per prompt as candidate samples (sample indices offset..offset+n-1, each
    with its own seed, so a second pass never repeats the first)."""
    if n < 1 or not prompts:
        return []
    for p in prompts:
        check_prompt(p)
    requests = [ChatRequest(messages=list(p.messages), tools=p.tools, n=n, temperature=config.temperature,
                            top_p=config.top_p, max_tokens=config.max_tokens,
                            enable_thinking=p.meta.get("enable_thinking", True) is not False,
                            seed=_prompt_seed(config.seed, p.id) + offset) for p in prompts]
    out = []
    for p, result in zip(prompts, backend.chat(requests)):
        for j, s in enumerate(result.samples):
            meta = {**p.meta, "prompt_id": p.id, "sample_index": offset + j, "finish_reason": s.finish_reason,
                    "completion_tokens": s.completion_tokens,
                    "enable_thinking": p.meta.get("enable_thinking", True) is not False}
            out.append(Document(text="", id=f"{p.id}-r{offset + j}", source=p.source, meta=meta,
                                messages=[*p.messages, assistant_message(s)], tools=p.tools))
    return out


def response_length(doc: Document) -> int:
    """Generated tokens when the backend reported them, else characters of the response."""
    n = int(doc.meta.get("completion_tokens") or 0)
    if n:
        return n
    last = (doc.messages or [{}])[-1]
    return len(str(last.get("content") or "")) + len(str(last.get("reasoning_content") or ""))


def select_prompts(candidates: Sequence[Document], keep_fraction: float) -> list[str]:
    """Ids of the prompts kept by response length: the `keep_fraction` whose responses are the
    longest on average (ties broken by id, so the choice is reproducible)."""
    lengths: dict[str, list[int]] = defaultdict(list)
    for c in candidates:
        lengths[c.meta["prompt_id"]].append(response_length(c))
    ranked = sorted(lengths, key=lambda pid: (-sum(lengths[pid]) / len(lengths[pid]), pid))
    return ranked[:math.ceil(keep_fraction * len(ranked))]


def rejection_sample(prompts: Sequence[Document], backend: Backend, pipeline: FilterPipeline,
                     config: RejectionConfig | None = None) -> tuple[list[Document], dict[str, Any]]:
    """Accepted responses of the selected prompts, and the counts of every step."""
    config = config or RejectionConfig()
    first = sample_candidates(prompts, backend, config.first_pass, config.sampling)
    kept_first, report_first = pipeline.run(first)
    selected = select_prompts(first, config.keep_fraction)
    chosen = set(selected)
    hard = [p for p in prompts if p.id in chosen]
    extra = sample_candidates(hard, backend, config.k - config.first_pass, config.sampling, offset=config.first_pass)
    kept_extra, report_extra = pipeline.run(extra)
    accepted = [c for c in kept_first if c.meta["prompt_id"] in chosen] + kept_extra
    report = {
        "prompts": len(prompts), "first_pass": {"responses": len(first), "filters": report_first,
                                                "accepted": len(kept_first)},
        "selected_prompts": len(hard), "dropped_short_prompts": len(prompts) - len(hard),
        "scaling": {"responses": len(extra), "filters": report_extra, "accepted": len(kept_extra)},
        "accepted": len(accepted), "prompts_with_accepted": len({c.meta["prompt_id"] for c in accepted}),
    }
    return accepted, report
