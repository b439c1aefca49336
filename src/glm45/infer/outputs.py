"""What the engine returns: per-step deltas (`RequestOutput`) and whole results (`GenerationResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# One generated token's log-probabilities: {"token_id": int, "logprob": float,
# "top": [(token_id, logprob), ...]} (the raw model distribution).
TokenLogprob = dict[str, Any]


@dataclass
class GenerationResult:
    """One finished completion. For a request with n > 1, the fields are the first sample's and
    `samples` holds all n."""

    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]  # generated tokens only (a stop token that ended it is included)
    text: str  # decoded generated text, stop string excluded ("" without a tokenizer)
    finish_reason: str  # "stop" | "length" | "abort"
    logprobs: list[TokenLogprob] | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    samples: list["GenerationResult"] = field(default_factory=list, repr=False)


@dataclass
class RequestOutput:
    """What one engine step produced for one request."""

    request_id: str
    new_token_ids: list[int]
    new_text: str
    finished: bool
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None  # for new_token_ids, when requested
    num_prompt_tokens: int = 0
    num_generated_tokens: int = 0  # so far, including new_token_ids
    result: GenerationResult | None = None  # the whole result, on the finishing output
