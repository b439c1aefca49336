"""Quality filtering of trajectories (paper §3.1, step 4): several judges decide whether each
task was completed; only trajectories every judge (or `min_votes` of them) accepts are kept.

- `StateJudge`: the environment reached the task's terminal state (the built-in world's exact
  state, or every expected call made; no call at all for an irrelevant request).
- `ProtocolJudge`: the trajectory keeps the tool-call protocol (glm45.sft.verifiers).
- `LLMJudge`: a model reads the task and the transcript and answers YES or NO, `votes` times
  with different seeds; the majority counts. Any backend works: the local engine or a strong
  model behind an OpenAI-compatible endpoint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Protocol

from glm45.eval.backend import Backend, ChatRequest
from glm45.sft.agentic.rollout import Trajectory
from glm45.sft.records import SFTError, sample_document


class Judge(Protocol):
    name: str

    def __call__(self, trajectories: Sequence[Trajectory]) -> list[bool]:
        ...


class StateJudge:
    name = "terminal_state"

    def __call__(self, trajectories: Sequence[Trajectory]) -> list[bool]:
        return [t.episode.end != "truncated" and t.task.is_completed(t.env) for t in trajectories]


class ProtocolJudge:
    name = "protocol"

    def __call__(self, trajectories: Sequence[Trajectory]) -> list[bool]:
        from glm45.sft.verifiers import ToolProtocolFilter

        check = ToolProtocolFilter()
        return [check.check(sample_document(t.to_sample())) is None for t in trajectories]


JUDGE_PROMPT = """You are judging whether an AI assistant completed a user's task with its tools.

Task (what the user wanted): {task}

Transcript:
{transcript}

Did the assistant complete the task correctly and completely, calling the right tools with the right
arguments and telling the user the result? Answer with exactly one word: YES or NO."""


def transcript(messages: Sequence[dict[str, Any]]) -> str:
    lines = []
    for m in messages:
        role = m["role"]
        if role == "assistant":
            for call in m.get("tool_calls") or []:
                fn = call.get("function", call)
                lines.append(f"ASSISTANT CALLS {fn['name']}({fn.get('arguments')})")
            if m.get("content"):
                lines.append(f"ASSISTANT: {m['content']}")
        elif role == "tool":
            lines.append(f"TOOL RESULT: {m.get('content')}")
        elif role in ("user", "system"):
            lines.append(f"{role.upper()}: {m.get('content')}")
    return "\n".join(lines)


class LLMJudge:
    def __init__(self, backend: Backend, votes: int = 1, temperature: float = 0.0, max_tokens: int = 256,
                 enable_thinking: bool = False, seed: int = 0):
        if votes < 1:
            raise SFTError(f"votes must be >= 1, got {votes}")
        self.backend, self.votes, self.temperature = backend, votes, temperature
        self.max_tokens, self.enable_thinking, self.seed = max_tokens, enable_thinking, seed
        self.name = f"llm_judge:{getattr(backend, 'name', 'model')}"

    def __call__(self, trajectories: Sequence[Trajectory]) -> list[bool]:
        requests = []
        for i, t in enumerate(trajectories):
            task = t.task.instruction or t.task.user
            if t.task.expected:
                task += "\nExpected tool calls: " + json.dumps(t.task.expected, ensure_ascii=False)
            prompt = JUDGE_PROMPT.format(task=task, transcript=transcript(t.messages))
            requests.append(ChatRequest(messages=[{"role": "user", "content": prompt}], n=self.votes,
                                        temperature=self.temperature, max_tokens=self.max_tokens,
                                        enable_thinking=self.enable_thinking, seed=self.seed + 7919 * i))
        verdicts = []
        for result in self.backend.chat(requests):
            yes = sum(verdict(s.content) for s in result.samples)
            verdicts.append(yes * 2 > len(result.samples))
        return verdicts


def verdict(text: str) -> bool:
    """YES / NO from a judge's answer: the last such word wins; anything else is NO."""
    words = re.findall(r"\b(YES|NO)\b", text.upper())
    return bool(words) and words[-1] == "YES"


def judge_trajectories(trajectories: Sequence[Trajectory], judges: Sequence[Judge],
                       min_votes: int | None = None) -> tuple[list[Trajectory], dict[str, Any]]:
    """The trajectories at least `min_votes` judges accept (all of them by default), and a report
    of each judge's acceptances."""
    if not judges:
        raise SFTError("judge_trajectories needs at least one judge")
    need = len(judges) if min_votes is None else min_votes
    if not 1 <= need <= len(judges):
        raise SFTError(f"min_votes must lie in [1, {len(judges)}], got {min_votes}")
    votes = [0] * len(trajectories)
    report: dict[str, Any] = {"trajectories": len(trajectories), "judges": {}}
    for judge in judges:
        accepted = judge(trajectories)
        report["judges"][judge.name] = sum(accepted)
        for i, ok in enumerate(accepted):
            votes[i] += bool(ok)
    kept = [t for t, v in zip(trajectories, votes) if v >= need]
    report["kept"] = len(kept)
    return kept, report
