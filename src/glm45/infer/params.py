"""Sampling parameters of one generation request, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace


class SamplingParamsError(ValueError):
    """A sampling parameter outside its valid range (the message names it)."""


@dataclass
class SamplingParams:
    """How to sample one completion (OpenAI / vLLM meanings).

    temperature 0 is greedy. top_k 0 (or -1) and top_p 1 and min_p 0 disable those filters.
    repetition_penalty (> 1 discourages) applies to prompt and generated tokens; presence and
    frequency penalties (OpenAI style) to generated tokens only. `stop` strings are matched on
    the decoded text across token boundaries and excluded from the returned text. Stop tokens are
    `stop_token_ids` plus the tokenizer's / config's end-of-sequence ids unless `ignore_eos`.
    `logprobs`: None for none, k >= 0 for the sampled token's log-probability plus the top k
    (log-probabilities of the model's raw distribution, before temperature and filters).
    """

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    seed: int | None = None
    logprobs: int | None = None
    n: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.top_k == -1:
            self.top_k = 0
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise SamplingParamsError(f"invalid sampling parameter: {msg}")

        def finite(name: str) -> None:
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                 f"{name} must be a finite number, got {v!r}")

        need(_is_int(self.max_tokens) and self.max_tokens >= 1,
             f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        for name in ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"):
            finite(name)
        need(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        need(0 < self.top_p <= 1, f"top_p must lie in (0, 1], got {self.top_p}")
        need(_is_int(self.top_k) and self.top_k >= 0,
             f"top_k must be an integer >= 0 (0 or -1 = off), got {self.top_k!r}")
        need(0 <= self.min_p <= 1, f"min_p must lie in [0, 1], got {self.min_p}")
        need(self.repetition_penalty > 0, f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        need(-2 <= self.presence_penalty <= 2, f"presence_penalty must lie in [-2, 2], got {self.presence_penalty}")
        need(-2 <= self.frequency_penalty <= 2, f"frequency_penalty must lie in [-2, 2], got {self.frequency_penalty}")
        need(all(isinstance(s, str) and s for s in self.stop), f"stop must be non-empty strings, got {self.stop!r}")
        need(all(_is_int(t) and t >= 0 for t in self.stop_token_ids),
             f"stop_token_ids must be non-negative integers, got {self.stop_token_ids!r}")
        need(isinstance(self.ignore_eos, bool), f"ignore_eos must be a bool, got {self.ignore_eos!r}")
        need(self.seed is None or _is_int(self.seed), f"seed must be an integer or None, got {self.seed!r}")
        need(self.logprobs is None or (_is_int(self.logprobs) and 0 <= self.logprobs <= 20),
             f"logprobs must be None or an integer in [0, 20], got {self.logprobs!r}")
        need(_is_int(self.n) and self.n >= 1, f"n must be an integer >= 1, got {self.n!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def uses_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @property
    def uses_filters(self) -> bool:
        return self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0.0

    def single(self, index: int = 0) -> "SamplingParams":
        """The parameters of sample `index` of an n-sample request (n = 1, seed offset)."""
        seed = None if self.seed is None else self.seed + index
        return replace(self, n=1, seed=seed)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
