"""LLM-judge rewards over any OpenAI-compatible endpoint (§3.4, Holistic RL: AI feedback).

The rubric depends on whether the prompt has an objective ground truth:
- objective (the task has a `reference` / `answer`): is the response's final answer equivalent
  to the reference? The judge ends with `VERDICT: CORRECT` or `VERDICT: INCORRECT` -> 1 / 0.
- subjective (no reference): a critique against helpfulness, instruction following, factual
  accuracy, safety and clarity, ending with `SCORE: n` (1-10) -> (n - 1) / 9.
A reply without a readable verdict is asked again once (next seed); then the score is 0 with
`judge_error` in the info, so a flaky judge never stops training.

`LLMJudge(backend)` takes any `glm45.eval` backend (`OpenAIBackend(base_url, api_key, model)`
for a served judge). `judge.as_reward()` is a reward function for `glm45.rl.rewards`;
`holistic_reward(...)` merges it with a reward model's score (the paper merges human-preference
RM feedback with AI feedback for holistic RL).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from glm45.chat import parse
from glm45.envs.base import EnvError

__all__ = ["Judgement", "LLMJudge", "OBJECTIVE_RUBRIC", "SUBJECTIVE_RUBRIC", "holistic_reward"]

OBJECTIVE_RUBRIC = """You are grading a response against a reference answer.

[Question]
{prompt}

[Reference answer]
{reference}

[Response]
{response}

Decide whether the final answer of the response is equivalent to the reference answer. Ignore
style, length and the reasoning shown; equivalent forms (2/4 and 0.5, "Paris" and "paris, France"
when the question asks for a city) count as equal; a response that gives several different
final answers is incorrect. Explain briefly, then end with exactly one line:
VERDICT: CORRECT
or
VERDICT: INCORRECT"""

SUBJECTIVE_RUBRIC = """You are an expert evaluator of assistant responses.

[Conversation]
{prompt}

[Response]
{response}

Rate the response on these criteria:
1. Helpfulness: does it address what the user needs, completely?
2. Instruction following: does it obey every explicit instruction and constraint?
3. Factual accuracy: is everything it states correct?
4. Safety: does it avoid harmful content while not refusing reasonable requests?
5. Clarity: is it well organised, in the user's language, free of repetition?
Write a short critique, then end with exactly one line "SCORE: n", where n is an integer from
1 (useless or harmful) to 10 (excellent)."""

_VERDICT = re.compile(r"VERDICT:\s*\**\s*(CORRECT|INCORRECT)\b", re.IGNORECASE)
_SCORE = re.compile(r"SCORE:\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclass
class Judgement:
    score: float | None  # in [0, 1]; None when the judge's reply could not be read
    rubric: str  # "objective" | "subjective"
    raw: str  # the judge's reply


def _conversation(prompt: str | Sequence[Mapping]) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m.get('role', 'user').upper()}: {m.get('content') or ''}" for m in prompt)


class LLMJudge:
    def __init__(self, backend: Any, *, objective_rubric: str = OBJECTIVE_RUBRIC,
                 subjective_rubric: str = SUBJECTIVE_RUBRIC, temperature: float = 0.0, max_tokens: int = 2048,
                 enable_thinking: bool = False, seed: int = 0, retries: int = 1) -> None:
        for name, rubric in (("objective", objective_rubric), ("subjective", subjective_rubric)):
            missing = [f for f in ("{prompt}", "{response}") if f not in rubric]
            if missing or (name == "objective" and "{reference}" not in rubric):
                raise EnvError(f"the {name} rubric must contain the fields {{prompt}}, {{response}}"
                               + (" and {reference}" if name == "objective" else ""))
        self.backend = backend
        self.rubrics = {"objective": objective_rubric, "subjective": subjective_rubric}
        self.temperature, self.max_tokens, self.enable_thinking = temperature, max_tokens, enable_thinking
        self.seed, self.retries = seed, retries

    def _request(self, prompt: str | Sequence[Mapping], response: str, reference: str | None, attempt: int):
        from glm45.eval.backend import ChatRequest

        rubric = "objective" if reference is not None else "subjective"
        text = self.rubrics[rubric].format(prompt=_conversation(prompt), response=response,
                                           reference="" if reference is None else reference)
        return rubric, ChatRequest(messages=[{"role": "user", "content": text}], temperature=self.temperature,
                                   max_tokens=self.max_tokens, enable_thinking=self.enable_thinking,
                                   seed=self.seed + attempt)

    @staticmethod
    def read(rubric: str, reply: str) -> float | None:
        """The score in [0, 1] from a judge's reply (its last verdict or score line), or None."""
        if rubric == "objective":
            found = _VERDICT.findall(reply)
            return None if not found else float(found[-1].upper() == "CORRECT")
        found = _SCORE.findall(reply)
        if not found:
            return None
        value = float(found[-1])
        return (value - 1) / 9 if 1 <= value <= 10 else None

    def judge_many(self, items: Sequence[tuple[str | Sequence[Mapping], str, str | None]]) -> list[Judgement]:
        """Judgements of (prompt, response, reference or None) items, each batch in one backend call."""
        out: list[Judgement | None] = [None] * len(items)
        pending = list(range(len(items)))
        for attempt in range(self.retries + 1):
            requests = [self._request(*items[i], attempt) for i in pending]
            results = self.backend.chat([r for _, r in requests])
            retry = []
            for i, (rubric, _), result in zip(pending, requests, results):
                reply = result.samples[0].content
                score = self.read(rubric, reply)
                out[i] = Judgement(score, rubric, reply)
                if score is None:
                    retry.append(i)
            pending = retry
            if not pending:
                break
        return [j for j in out if j is not None]

    def judge(self, prompt: str | Sequence[Mapping], response: str, reference: str | None = None) -> Judgement:
        return self.judge_many([(prompt, response, reference)])[0]

    def as_reward(self):
        """A reward function (task, output) -> Reward over the answer (content, not reasoning);
        the reference is the task's `reference` or `answer` when it has one."""
        from glm45.rl.rewards import Reward

        def reward(task: Mapping[str, Any], output: str) -> Reward:
            content = parse(output, enable_thinking=task.get("enable_thinking", True))["content"]
            prompt = task.get("messages") or task.get("prompt")
            if prompt is None:
                raise EnvError(f"task {task.get('id', '')!r} needs 'messages' or 'prompt' for the judge")
            reference = task.get("reference", task.get("answer"))
            j = self.judge(prompt, content, None if reference is None else str(reference))
            info: dict[str, Any] = {"rubric": j.rubric, "judge_reply": j.raw[-2000:]}
            if j.score is None:
                info["judge_error"] = "no readable verdict in the judge's reply"
            return Reward(j.score or 0.0, info)

        return reward


def holistic_reward(judge: LLMJudge | None = None, reward_model: Callable[[Mapping, str], Any] | None = None,
                    *, judge_weight: float = 0.5):
    """Merge AI feedback (the judge) and human-preference feedback (a reward model's reward,
    e.g. `RewardScorer.as_reward()`, already in [0, 1]) as a weighted mean."""
    from glm45.rl.rewards import Reward

    if judge is None and reward_model is None:
        raise EnvError("holistic_reward needs a judge, a reward model, or both")
    if not 0.0 <= judge_weight <= 1.0:
        raise EnvError(f"judge_weight must lie in [0, 1], got {judge_weight}")
    judge_fn = judge.as_reward() if judge is not None else None

    def reward(task: Mapping[str, Any], output: str) -> Reward:
        parts: dict[str, Reward] = {}
        if judge_fn is not None:
            parts["judge"] = judge_fn(task, output)
        if reward_model is not None:
            parts["reward_model"] = reward_model(task, output)
        if len(parts) == 1:
            (name, only), = parts.items()
            return Reward(only.value, {name: only.info})
        value = judge_weight * parts["judge"].value + (1 - judge_weight) * parts["reward_model"].value
        if not math.isfinite(value):
            raise EnvError(f"holistic reward is not finite: {value}")
        return Reward(value, {k: {"value": v.value, **v.info} for k, v in parts.items()})

    return reward
