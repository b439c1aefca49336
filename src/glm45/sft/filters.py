"""Rejection sampling as a pipeline of filters, with counts at every step (paper §3.1).

A candidate is an SFT sample (`glm45.data.Document` with `messages`) whose assistant turns after
the last user message are the sampled response. Its `meta` says how it was made and how to check
it: `finish_reason` (or `finish_reasons`, one per agent turn), `enable_thinking`, and a
`verifier` with what that verifier needs (see glm45.sft.verifiers).

A filter's `check(doc)` returns None to keep the sample, or a short reason to drop it.
`FilterPipeline.run` applies the filters in order and reports, per filter, how many samples came
in, how many it kept, and why it dropped the others.

The stages of the paper, in the order `default_pipeline` builds them:
1. form: truncated (finish reason "length", or no final answer), too short, repetitive, invalid
   reasoning format (this module);
2. objective correctness: math answers (math-verify), code (tests in the sandbox);
3. subjective answers: a reward-model hook with a threshold;
4. tool use: the call protocol, then the expected terminal state (glm45.sft.verifiers).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from glm45.data.document import Document
from glm45.sft.records import assistant_text

TAGS = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>",
        "</arg_value>", "<tool_response>", "</tool_response>", "<|assistant|>", "<|user|>", "<|observation|>",
        "<|system|>", "<|endoftext|>")


def response_messages(doc: Document) -> list[dict[str, Any]]:
    """The sampled part of a candidate: every message after the last user message."""
    messages = doc.messages or []
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    return messages[last_user + 1:]


def response_turns(doc: Document) -> list[dict[str, Any]]:
    """The assistant messages of the response."""
    return [m for m in response_messages(doc) if m.get("role") == "assistant"]


def response_text(doc: Document) -> str:
    return "\n".join(assistant_text(m) for m in response_turns(doc))


def finish_reasons(doc: Document) -> list[str]:
    reasons = doc.meta.get("finish_reasons")
    if reasons is None:
        reasons = [doc.meta["finish_reason"]] if doc.meta.get("finish_reason") else []
    return [str(r) for r in reasons]


class Filter(ABC):
    """One step of rejection sampling."""

    name: str = "filter"

    @abstractmethod
    def check(self, doc: Document) -> str | None:
        """None to keep `doc`; else why it is dropped."""

    def check_batch(self, docs: Sequence[Document]) -> list[str | None]:
        """`check` over many samples (filters that call a model override this to batch)."""
        return [self.check(d) for d in docs]


@dataclass
class StepReport:
    filter: str
    seen: int = 0
    kept: int = 0
    reasons: Counter = field(default_factory=Counter)

    @property
    def dropped(self) -> int:
        return self.seen - self.kept

    def as_dict(self) -> dict[str, Any]:
        return {"filter": self.filter, "in": self.seen, "kept": self.kept, "dropped": self.dropped,
                "reasons": dict(self.reasons.most_common())}


class FilterPipeline:
    """Filters applied in order; `run` returns the survivors and a report per filter."""

    def __init__(self, filters: Sequence[Filter]):
        names = [f.name for f in filters]
        if len(set(names)) != len(names):
            raise ValueError(f"filter names must be unique, got {names}")
        self.filters = list(filters)

    def run(self, docs: Iterable[Document]) -> tuple[list[Document], list[dict[str, Any]]]:
        current = list(docs)
        reports = []
        for f in self.filters:
            step = StepReport(f.name, seen=len(current))
            verdicts = f.check_batch(current)
            kept = []
            for doc, reason in zip(current, verdicts):
                if reason is None:
                    kept.append(doc)
                else:
                    step.reasons[reason] += 1
                    doc.meta.setdefault("rejected_by", f"{f.name}: {reason}")
            step.kept = len(kept)
            reports.append(step.as_dict())
            current = kept
        return current, reports


def format_report(reports: list[dict[str, Any]]) -> str:
    """One line per filter: in -> kept, and the main reasons."""
    lines = []
    for r in reports:
        why = ", ".join(f"{k} {v}" for k, v in list(r["reasons"].items())[:3])
        lines.append(f"{r['filter']:>16}: {r['in']:5d} -> {r['kept']:5d}" + (f"  ({why})" if why else ""))
    return "\n".join(lines)


# ---- form -----------------------------------------------------------------------------------

class TruncationFilter(Filter):
    """Cut off by the token limit, or ended without a final answer (an assistant turn with
    neither content nor tool calls, or a response that stops at a tool call)."""

    name = "truncated"

    def check(self, doc: Document) -> str | None:
        if any(r == "length" for r in finish_reasons(doc)):
            return "hit the token limit"
        if any(r == "abort" for r in finish_reasons(doc)):
            return "aborted"
        turns = response_turns(doc)
        if not turns:
            return "no assistant response"
        last = turns[-1]
        if last.get("tool_calls"):
            return "ends in a tool call without a final answer"
        if not str(last.get("content") or "").strip():
            return "empty final answer"
        return None


class LengthFilter(Filter):
    """Too short: fewer than `min_chars` characters of response (reasoning + content + calls)."""

    name = "too_short"

    def __init__(self, min_chars: int = 8):
        self.min_chars = min_chars

    def check(self, doc: Document) -> str | None:
        n = len(response_text(doc).strip())
        return f"under {self.min_chars} characters" if n < self.min_chars else None


class RepetitionFilter(Filter):
    """Degenerate repetition: too many duplicate word n-grams, a line repeated over and over, or
    the same span looping at the end of the text (a model stuck in a loop)."""

    name = "repetitive"

    def __init__(self, n: int = 4, max_duplicate_ngrams: float = 0.35, min_ngrams: int = 24,
                 max_line_repeats: int = 4, tail_repeats: int = 4):
        self.n, self.max_dup, self.min_ngrams = n, max_duplicate_ngrams, min_ngrams
        self.max_line_repeats, self.tail_repeats = max_line_repeats, tail_repeats

    def check(self, doc: Document) -> str | None:
        for turn in response_turns(doc):
            for text in (str(turn.get("reasoning_content") or ""), str(turn.get("content") or "")):
                reason = self._check_text(text)
                if reason:
                    return reason
        return None

    def _check_text(self, text: str) -> str | None:
        words = text.split()
        grams = [tuple(words[i:i + self.n]) for i in range(len(words) - self.n + 1)]
        if len(grams) >= self.min_ngrams and 1 - len(set(grams)) / len(grams) > self.max_dup:
            return f"duplicate {self.n}-grams over {self.max_dup:.0%}"
        lines = [line.strip() for line in text.splitlines() if len(line.strip()) >= 8]
        if lines and Counter(lines).most_common(1)[0][1] > self.max_line_repeats:
            return f"a line repeated more than {self.max_line_repeats} times"
        # A span of 2-60 characters repeated back to back at the end: "... the end. the end. the end."
        # (at least 20 characters of it, so a number like 100000 is not a loop).
        loop = re.search(rf"(.{{2,60}}?)(?:\s*\1){{{self.tail_repeats - 1},}}\s*$", text[-2000:], re.DOTALL)
        if loop and len(loop.group(0).strip()) >= 20:
            return "loops at the end"
        return None


class ReasoningFormatFilter(Filter):
    """The response fits its mode: with thinking on, the final turn has reasoning (when
    `require_reasoning`); with thinking off, no turn has any; and no chat markup (think or tool
    tags, role tokens) leaked into reasoning or content, which a well-formed output never has."""

    name = "reasoning_format"

    def __init__(self, require_reasoning: bool = True):
        self.require_reasoning = require_reasoning

    def check(self, doc: Document) -> str | None:
        thinking = doc.meta.get("enable_thinking", True) is not False
        turns = response_turns(doc)
        for turn in turns:
            for key in ("reasoning_content", "content"):
                value = str(turn.get(key) or "")
                tag = next((t for t in TAGS if t in value), None)
                if tag:
                    return f"{tag} inside {key}"
            if not thinking and str(turn.get("reasoning_content") or "").strip():
                return "reasoning with thinking off"
        require = doc.meta.get("require_reasoning", self.require_reasoning)
        if thinking and require and turns and not str(turns[-1].get("reasoning_content") or "").strip():
            return "no reasoning with thinking on"
        return None


def form_filters(min_chars: int = 8, require_reasoning: bool = True) -> list[Filter]:
    """Stage 1 of the pipeline."""
    return [TruncationFilter(), LengthFilter(min_chars), RepetitionFilter(), ReasoningFormatFilter(require_reasoning)]
