"""What the evaluation harness asks of a model: the backend protocol and its request/result types.

A backend turns `ChatRequest`s into `ChatResult`s. `OpenAIBackend` (glm45.eval.openai_backend)
talks to any OpenAI-compatible endpoint; a local-engine backend (glm45.eval.local, built on
glm45.infer) implements the same protocol. Base-model tasks need log-likelihoods instead of
generations: a backend that can score text also implements `LoglikelihoodBackend`.

Sampling semantics every backend follows: sample ``j`` of a request with ``seed=s`` is drawn with
seed ``s + j`` (so a cache can regenerate or extend any subset of samples reproducibly).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Backend", "BackendError", "ChatRequest", "ChatResult", "ChatSample", "EvalError",
    "LoglikelihoodBackend", "LoglikelihoodRequest", "LoglikelihoodResult", "OnResult",
    "supports_loglikelihood",
]


class EvalError(ValueError):
    """Bad evaluation input: a malformed task record, an unknown task name, a bad option."""


class BackendError(RuntimeError):
    """The model backend failed (after retries, where retrying made sense)."""


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict]  # OpenAI-style chat messages
    tools: list[dict] | None = None  # OpenAI-style tool schemas
    n: int = 1  # samples wanted
    temperature: float = 0.6
    top_p: float = 1.0
    max_tokens: int = 16384
    enable_thinking: bool = True
    seed: int | None = None

    def __post_init__(self):
        if self.n < 1:
            raise EvalError(f"ChatRequest.n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise EvalError(f"ChatRequest.max_tokens must be >= 1, got {self.max_tokens}")

    def sample(self, j: int) -> ChatRequest:
        """The single-sample request that draws sample `j` of this one."""
        return replace(self, n=1, seed=None if self.seed is None else self.seed + j)

    def identity(self) -> dict[str, Any]:
        """Everything that determines a sample's distribution (not `n`), for cache keys."""
        d = asdict(self)
        d.pop("n")
        return d


@dataclass
class ChatSample:
    content: str = ""
    reasoning_content: str = ""
    tool_calls: list[dict] = field(default_factory=list)  # [{"name": str, "arguments": dict}]
    finish_reason: str = "stop"
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChatSample:
        return cls(**{k: d[k] for k in ("content", "reasoning_content", "tool_calls",
                                         "finish_reason", "completion_tokens") if k in d})


@dataclass
class ChatResult:
    samples: list[ChatSample]


OnResult = Callable[[int, ChatResult], None]


class Backend(Protocol):
    """A chat model. `name` identifies it (it keys the response cache and labels results)."""

    name: str

    def chat(self, requests: Sequence[ChatRequest], on_result: OnResult | None = None) -> list[ChatResult]:
        """One result per request, in order, each with `request.n` samples. `on_result(i, result)`
        is called as soon as request `i` is complete (possibly from another thread)."""
        ...


@dataclass(frozen=True)
class LoglikelihoodRequest:
    context: str  # conditioning text ("" for unconditional scoring of `continuation`)
    continuation: str  # the text scored, appended verbatim to `context`


@dataclass(frozen=True)
class LoglikelihoodResult:
    logprob: float  # sum of natural-log probabilities of the continuation's tokens
    n_tokens: int  # tokens in the continuation
    is_greedy: bool = False  # every continuation token was the argmax


@runtime_checkable
class LoglikelihoodBackend(Protocol):
    """Optional capability for base-model tasks (a local model can do it; chat APIs cannot)."""

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        ...


def supports_loglikelihood(backend: object) -> bool:
    return isinstance(backend, LoglikelihoodBackend)
