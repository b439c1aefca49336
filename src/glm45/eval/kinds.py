"""Task kinds: how a kind of task prompts, samples, scores and aggregates.

A `TaskKind` validates records, runs a whole task against a backend (`evaluate`) and turns the
per-item results into metrics. Most kinds are single-turn chat tasks: they subclass `ChatKind` and
only say how to build the prompt of a record (`prepare`) and how to score one sample (`score`);
sampling k samples per item, progress, threaded scoring and avg@k come from here.
"""

from __future__ import annotations

import hashlib
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from glm45.eval.backend import Backend, ChatRequest, ChatResult, ChatSample, EvalError

if TYPE_CHECKING:
    from glm45.eval.tasks import Task

__all__ = ["ChatKind", "ItemResult", "Prompt", "RunContext", "Sampling", "Score", "TaskKind",
           "chat_messages", "check_messages", "get_field", "item_seed", "mean"]


@dataclass
class Prompt:
    messages: list[dict]
    tools: list[dict] | None = None
    context: dict = field(default_factory=dict)  # what scoring needs besides the record


@dataclass
class Score:
    value: float  # in [0, 1]
    details: dict = field(default_factory=dict)


@dataclass
class ItemResult:
    id: str
    score: float  # mean over the item's samples
    samples: list[dict]  # per sample: the model's output, its score and scoring details
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, **self.extra, "samples": self.samples}


@dataclass(frozen=True)
class Sampling:
    k: int = 1  # samples per item (avg@k)
    temperature: float = 0.6
    top_p: float = 1.0
    max_tokens: int = 16384
    enable_thinking: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.k < 1:
            raise EvalError(f"k must be >= 1, got {self.k}")
        if self.max_tokens < 1:
            raise EvalError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def request(self, prompt: Prompt, seed: int) -> ChatRequest:
        return ChatRequest(messages=prompt.messages, tools=prompt.tools, n=self.k,
                           temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                           enable_thinking=self.enable_thinking, seed=seed)


@dataclass
class RunContext:
    backend: Backend
    sampling: Sampling = field(default_factory=Sampling)
    user_backend: Backend | None = None  # plays the user in multi-turn agent tasks
    score_workers: int = 4
    show_progress: bool = True

    @contextmanager
    def progress(self, desc: str, total: int) -> Iterator[Callable[[int], None]]:
        """A thread-safe progress counter: yields `advance(n)`."""
        lock = threading.Lock()
        with tqdm(total=total, desc=desc, unit="sample", disable=not self.show_progress,
                  dynamic_ncols=True) as bar:
            def advance(n: int) -> None:
                with lock:
                    bar.update(n)
            yield advance


def item_seed(base_seed: int, task_name: str, item_id: str) -> int:
    """A stable per-item seed (leaves room for `+ j` per sample below 2**31)."""
    digest = hashlib.sha256(f"{base_seed}\x00{task_name}\x00{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 2**20)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


class TaskKind(ABC):
    name: str
    description: str

    @abstractmethod
    def validate(self, record: dict, where: str) -> None:
        """Raise EvalError naming `where` (file and line) when `record` does not fit the schema."""

    @abstractmethod
    def evaluate(self, task: Task, ctx: RunContext) -> list[ItemResult]:
        ...

    def metrics(self, items: list[ItemResult], ctx: RunContext) -> dict[str, float]:
        return {f"avg@{ctx.sampling.k}": mean([it.score for it in items])}


def _sample_record(sample: ChatSample, score: Score) -> dict:
    rec = {"score": score.value, "details": score.details, "content": sample.content}
    if sample.reasoning_content:
        rec["reasoning_content"] = sample.reasoning_content
    if sample.tool_calls:
        rec["tool_calls"] = sample.tool_calls
    rec["finish_reason"] = sample.finish_reason
    rec["completion_tokens"] = sample.completion_tokens
    return rec


class ChatKind(TaskKind):
    """A single-turn chat task: one prompt per record, k samples, each scored on its own."""

    threaded_scoring = False  # score samples on a thread pool (for slow scorers, e.g. code runs)

    @abstractmethod
    def prepare(self, record: dict, rng: random.Random) -> Prompt:
        ...

    @abstractmethod
    def score(self, record: dict, prompt: Prompt, sample: ChatSample) -> Score:
        ...

    def evaluate(self, task: Task, ctx: RunContext) -> list[ItemResult]:
        s = ctx.sampling
        prompts, requests = [], []
        for record in task.records:
            seed = item_seed(s.seed, task.name, record["id"])
            prompt = self.prepare(record, random.Random(seed))
            prompts.append(prompt)
            requests.append(s.request(prompt, seed))
        with ctx.progress(task.name, len(requests) * s.k) as advance:
            results: list[ChatResult] = ctx.backend.chat(
                requests, on_result=lambda i, r: advance(len(r.samples)))

        jobs = [(i, j) for i, r in enumerate(results) for j in range(len(r.samples))]

        def run(job: tuple[int, int]) -> Score:
            i, j = job
            return self.score(task.records[i], prompts[i], results[i].samples[j])

        if self.threaded_scoring and ctx.score_workers > 1:
            with ThreadPoolExecutor(ctx.score_workers) as pool:
                scores = list(pool.map(run, jobs))
        else:
            scores = [run(job) for job in jobs]
        by_item: list[list[dict]] = [[] for _ in results]
        values: list[list[float]] = [[] for _ in results]
        for (i, j), score in zip(jobs, scores):
            by_item[i].append(_sample_record(results[i].samples[j], score))
            values[i].append(score.value)
        return [ItemResult(id=rec["id"], score=mean(values[i]), samples=by_item[i])
                for i, rec in enumerate(task.records)]


def get_field(record: dict, key: str, types: type | tuple[type, ...], where: str, *,
              required: bool = True, default: Any = None) -> Any:
    """`record[key]`, checked against `types`; a clear EvalError when absent or mistyped."""
    if key not in record or record[key] is None:
        if required:
            raise EvalError(f"{where}: missing field {key!r}")
        return default
    value = record[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        names = " or ".join(t.__name__ for t in _as_tuple(types))
        raise EvalError(f"{where}: field {key!r} must be {names}, got {type(value).__name__}")
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def check_messages(messages: Any, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise EvalError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects")
    return messages


def chat_messages(record: dict, text_key: str, suffix: str = "") -> list[dict]:
    """The conversation for a record: its 'messages' as given, else an optional 'system' message
    and one user message with `record[text_key]` + `suffix`."""
    if record.get("messages"):
        return [dict(m) for m in record["messages"]]
    messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    messages.append({"role": "user", "content": record[text_key] + suffix})
    return messages
