"""Rejection-sampling filters that check what a response says (stages 2-4 of the pipeline).

Each applies to the candidates whose `meta["verifier"]` names it and passes the others through:
- "math": the final answer (`\\boxed{}` by default, or `meta["answer_format"]`) equals
  `meta["answer"]` under math-verify (glm45.eval.math_answer);
- "code": the program in the final answer passes `meta["code_test"]` in the sandbox
  (glm45.eval.coding.run_tests: HumanEval-style `prompt`/`entry_point`/`test`, or stdin/stdout
  `tests`);
- "reward": a reward model's score of the response is at least a threshold (a hook: any
  `score(doc) -> float`);
- "tool": the tool-call protocol (`ToolProtocolFilter`, for every sample with tools or calls)
  and the expected terminal state (`TerminalStateFilter`: the calls are replayed in a fresh
  environment and the task's goal checked).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from glm45.data.document import Document
from glm45.eval.coding import extract_code, run_tests
from glm45.eval.math_answer import extract_answer, is_equivalent
from glm45.sft.filters import Filter, FilterPipeline, form_filters, response_turns
from glm45.tasks.tool_schema import validate_call


def final_content(doc: Document) -> str:
    turns = response_turns(doc)
    return str(turns[-1].get("content") or "") if turns else ""


def verifier_of(doc: Document) -> str | None:
    return doc.meta.get("verifier")


class MathAnswerFilter(Filter):
    name = "math_answer"

    def check(self, doc: Document) -> str | None:
        if verifier_of(doc) != "math":
            return None
        gold = doc.meta.get("answer")
        if gold is None:
            return "no reference answer in meta"
        predicted = extract_answer(final_content(doc), doc.meta.get("answer_format", "boxed"))
        if predicted is None:
            return "no final answer found"
        return None if is_equivalent(predicted, str(gold)) else "wrong answer"


class CodeTestFilter(Filter):
    name = "code_tests"

    def __init__(self, workers: int = 2):
        self.workers = workers

    def check(self, doc: Document) -> str | None:
        if verifier_of(doc) != "code":
            return None
        record = doc.meta.get("code_test")
        if not isinstance(record, dict):
            return "no code_test in meta"
        code = extract_code(final_content(doc), record.get("entry_point"))
        score = run_tests(record, code)
        if score.value >= 1.0:
            return None
        return "tests timed out" if score.details.get("timed_out") else "tests failed"

    def check_batch(self, docs: Sequence[Document]) -> list[str | None]:
        with ThreadPoolExecutor(self.workers) as pool:  # each run is a sandboxed child process
            return list(pool.map(self.check, docs))


def token_f1(predicted: str, reference: str) -> float:
    """Word-overlap F1 of two texts (case- and punctuation-insensitive)."""
    p, r = (re.findall(r"\w+", s.lower()) for s in (predicted, reference))
    common = sum((Counter(p) & Counter(r)).values())
    if not p or not r or not common:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def reference_overlap_reward(doc: Document) -> float:
    """A stand-in reward model for tests and the offline loop: how much the final answer agrees
    with `meta["reference"]` (word F1). Pass a real reward model's score function instead."""
    return token_f1(final_content(doc), str(doc.meta.get("reference") or ""))


class RewardModelFilter(Filter):
    """Subjective answers: keep responses a reward model scores at least `threshold`; the score
    is stored in `meta["reward"]`."""

    name = "reward_model"

    def __init__(self, score: Callable[[Document], float] = reference_overlap_reward, threshold: float = 0.5,
                 verifiers: Sequence[str] = ("reward",)):
        self.score, self.threshold, self.verifiers = score, threshold, tuple(verifiers)

    def check(self, doc: Document) -> str | None:
        if verifier_of(doc) not in self.verifiers:
            return None
        value = float(self.score(doc))
        doc.meta["reward"] = value
        return None if value >= self.threshold else f"reward below {self.threshold}"


def _is_error_result(content: str) -> bool:
    if content.startswith("Error"):
        return True
    try:
        value = json.loads(content)
    except ValueError:
        return False
    return isinstance(value, dict) and "error" in value


class ToolProtocolFilter(Filter):
    """Every call well formed (a name, a JSON object of arguments), to an offered tool, with
    arguments valid under its schema; each call answered by one tool message, in order; no tool
    message without a call; no call that the tool answered with an error."""

    name = "tool_protocol"

    def check(self, doc: Document) -> str | None:
        messages = doc.messages or []
        tools = doc.tools or []
        if not tools and not any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
            return None
        pending: list[str | None] = []  # ids of calls awaiting a result
        for m in messages:
            role = m.get("role")
            if role == "tool":
                if not pending:
                    return "tool message without a call"
                want = pending.pop(0)
                if want and m.get("tool_call_id") and m["tool_call_id"] != want:
                    return "tool result answers another call"
                if _is_error_result(str(m.get("content") or "")):
                    return "a call failed"
                continue
            if pending:
                return "call left unanswered"
            if role != "assistant":
                continue
            for call in m.get("tool_calls") or []:
                if not isinstance(call, dict):
                    return "malformed call"
                fn = call.get("function", call)
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                    return "call without a name"
                if "invalid_arguments" in call or "invalid_arguments" in fn:
                    return "unparseable arguments"
                problems = validate_call({"name": fn["name"], "arguments": fn.get("arguments") or {}}, tools)
                if problems:
                    return "unknown tool" if problems[0].startswith("unknown tool") else "arguments violate the schema"
                pending.append(call.get("id"))
        return "call left unanswered" if pending else None


class TerminalStateFilter(Filter):
    """Replays the conversation's calls in a fresh environment of `toolkit` and checks that the
    task in `meta["task"]` (a glm45.sft.agentic AgentTask) reached its terminal state."""

    name = "terminal_state"

    def __init__(self, toolkit: Any = None):
        from glm45.sft.agentic.toolkit import Toolkit

        self.toolkit = toolkit or Toolkit.builtin()

    def check(self, doc: Document) -> str | None:
        from glm45.sft.agentic.tasks import AgentTask

        if verifier_of(doc) != "tool":
            return None
        if not isinstance(doc.meta.get("task"), dict):
            return "no task in meta"
        task = AgentTask.from_dict(doc.meta["task"])
        env = self.toolkit.environment(task.tools)
        for m in doc.messages or []:
            if m.get("role") != "assistant":
                continue
            for call in m.get("tool_calls") or []:
                fn = call.get("function", call)
                env.execute(fn["name"], fn.get("arguments") or {})
        return None if task.is_completed(env) else "terminal state not reached"


def default_pipeline(*, reward: Callable[[Document], float] = reference_overlap_reward,
                     reward_threshold: float = 0.5, toolkit: Any = None, min_chars: int = 8,
                     require_reasoning: bool = True, code_workers: int = 2) -> FilterPipeline:
    """The paper's four stages: form, objective answers, reward model, tool use."""
    return FilterPipeline(form_filters(min_chars, require_reasoning) + [
        MathAnswerFilter(), CodeTestFilter(code_workers), RewardModelFilter(reward, reward_threshold),
        ToolProtocolFilter(), TerminalStateFilter(toolkit)])
