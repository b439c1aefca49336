"""Held-out checks of a chat model on the built-in tasks (what SFT is meant to teach).

- arithmetic (test split), thinking on and off: answer accuracy (the content's final `\\boxed{}`
  answer, checked with math-verify as the rejection-sampling filter checks it; a number merely
  appearing somewhere in the text does not count), and whether the output has reasoning: with
  thinking on it should open with a non-empty `<think>` block; with thinking off (the prompt
  ends in `<think></think>`) it should write no think tags at all;
- tool tasks (test split, tasks that need calls), first assistant turn: the share of outputs
  whose tool-call markup is well formed and whose calls are schema-valid calls to offered tools
  (`glm45.rl.tool_format.check_tool_calls`, strict), and the share whose calls equal the
  ground truth (`glm45.tasks.score_calls`);
- whole episodes (rule-based user, tools executed): the share reaching the task's terminal state.

Decoding is greedy, so the figures are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from glm45.chat import parse
from glm45.eval.math_answer import extract_answer, is_equivalent
from glm45.infer import Engine, SamplingParams
from glm45.rl.tool_format import check_tool_calls
from glm45.sft.agentic.judge import StateJudge
from glm45.sft.agentic.rollout import RolloutConfig, generate_trajectories
from glm45.sft.agentic.tasks import builtin_tasks
from glm45.sft.agentic.toolkit import Toolkit
from glm45.eval.local import LocalBackend
from glm45.tasks import ToolTask, generate_arithmetic, score_calls
from glm45.tasks.arithmetic import to_messages


@dataclass
class EvalConfig:
    n_arithmetic: int = 50
    n_tools: int = 50
    n_episodes: int = 20
    seed: int = 0
    difficulty: tuple[int, ...] = (1, 2)
    tool_kinds: tuple[str, ...] = ("single", "multi", "parallel")
    n_distractors: int = 2
    max_tokens: int = 192


def _rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def generate(engine: Engine, prompts: list, params: SamplingParams) -> list[tuple[str, str]]:
    """(text, finish reason) per prompt; a prompt too long for the engine gets ("", "length")
    (it counts as a failure, and the run goes on)."""
    ids = [engine.prompt_ids(p) for p in prompts]
    fits = [i for i, x in enumerate(ids) if len(x) < engine.max_seq_len - 1]
    out = [("", "length")] * len(prompts)
    for i, r in zip(fits, engine.generate([ids[i] for i in fits], params) if fits else []):
        out[i] = (r.text, r.finish_reason)
    return out


def boxed_correct(text: str, answer: str, enable_thinking: bool) -> bool:
    """Whether the content (reasoning excluded) ends with the right `\\boxed{}` answer."""
    predicted = extract_answer(parse(text, enable_thinking=enable_thinking)["content"], "boxed")
    return predicted is not None and is_equivalent(predicted, answer)


def evaluate_arithmetic(engine: Engine, config: EvalConfig) -> dict[str, float]:
    problems = generate_arithmetic(config.n_arithmetic, config.seed, list(config.difficulty), split="test",
                                   unique=True)
    params = SamplingParams(max_tokens=config.max_tokens, temperature=0.0)
    out: dict[str, float] = {}
    for thinking in (True, False):
        prompts = [{"messages": to_messages(p)[:1], "enable_thinking": thinking} for p in problems]
        results = generate(engine, prompts, params)
        texts = [t for t, _ in results]
        mode = "on" if thinking else "off"
        out[f"accuracy_thinking_{mode}"] = _rate([boxed_correct(t, p.answer, thinking) for p, t in zip(problems, texts)])
        if thinking:
            out["reasoning_when_on"] = _rate([bool(parse(t)["reasoning_content"]) for t in texts])
        else:
            out["no_think_when_off"] = _rate(["<think>" not in t and "</think>" not in t for t in texts])
        out[f"truncated_thinking_{mode}"] = _rate([reason == "length" for _, reason in results])
    return out


def evaluate_tool_calls(engine: Engine, config: EvalConfig) -> dict[str, float]:
    tasks = [ToolTask(**t.builtin) for t in builtin_tasks(config.n_tools, config.seed, config.tool_kinds,
                                                           split="test", n_distractors=config.n_distractors)]
    prompts = [{"messages": [{"role": "user", "content": t.user}], "tools": t.tools} for t in tasks]
    results = generate(engine, prompts, SamplingParams(max_tokens=config.max_tokens, temperature=0.0))
    valid, exact, any_call = [], [], []
    for task, (text, reason) in zip(tasks, results):
        check = check_tool_calls(text, task.tools)
        any_call.append(bool(check.calls))
        valid.append(bool(check.calls) and check.ok and reason != "length")
        exact.append(valid[-1] and score_calls(check.calls, task, step=0)["exact"])
    return {"emits_call": _rate(any_call), "valid_call": _rate(valid), "exact_first_step": _rate(exact)}


def evaluate_episodes(engine: Engine, config: EvalConfig) -> dict[str, float]:
    tasks = builtin_tasks(config.n_episodes, config.seed + 1, ("single", "multi", "parallel", "irrelevant",
                                                               "multiturn"), split="test",
                          n_distractors=config.n_distractors)
    rollout = RolloutConfig(temperature=0.0, max_tokens=config.max_tokens, max_turns=6)
    trajs = generate_trajectories(tasks, Toolkit.builtin(), LocalBackend(engine), rollout)
    return {"episode_completed": _rate(StateJudge()(trajs))}


def evaluate_model(engine: Engine, config: EvalConfig | None = None) -> dict[str, Any]:
    config = config or EvalConfig()
    report: dict[str, Any] = {}
    report.update(evaluate_arithmetic(engine, config))
    report.update(evaluate_tool_calls(engine, config))
    if config.n_episodes:
        report.update(evaluate_episodes(engine, config))
    return report
