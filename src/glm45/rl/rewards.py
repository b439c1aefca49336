"""Verifiable rewards and the registry mapping task kinds to them.

A reward function takes the task record (a JSON-able dict, as the data buffer holds it) and the
model's raw output — one string (everything generated after `<|assistant|>`) for single-turn
kinds, the list of assistant turns' raw texts for multi-turn ones — and returns a `Reward`
(value plus diagnostics). `compute_reward(task, output)` dispatches on `task["reward_kind"]`
(not "kind": task records of glm45.tasks use that field for their own sub-kinds).

Built-in kinds:
- "math": the final answer of the content (not the reasoning) in the task's `answer_format`,
  checked for equivalence with `answer` by glm45.eval's math scorer (math-verify).
- "arithmetic": glm45.tasks' `check_answer` on the content (records of `ArithmeticProblem`).
- "function_call": the strict step-wise reward of §3.4: 1 only when the tool-call markup is
  well-formed, every call is valid under its tool's schema, and the calls equal the ground truth
  (name and every argument, schema defaults filled in; order-free for parallel calls). Expected
  calls come from `calls`, or `steps[step]` for a ToolTask record with a `step`.
- "tool_agent" (multi-turn): the end-to-end reward: 1 when every turn is well-formed (the process
  format penalty: the first malformed turn makes it 0) and replaying the calls leaves the world
  in the ToolTask's goal state.
- "code": the code block of the content passes the task's hidden `tests`, run in glm45.sandbox.

Truncated outputs need no special case: reasoning that never closes leaves the content empty (no
answer, reward 0), and a call cut off mid-markup is a format error.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from glm45.chat import parse
from glm45.rl.errors import RLError
from glm45.rl.tool_format import FormatCheck, check_tool_calls

__all__ = ["Reward", "arithmetic_reward", "code_reward", "compute_reward", "format_penalty", "function_call_reward",
           "get_reward", "math_reward", "register_reward", "reward_kinds", "tool_agent_reward", "with_format_penalty"]


@dataclass
class Reward:
    value: float
    info: dict[str, Any] = field(default_factory=dict)


RewardFn = Callable[[Mapping[str, Any], Any], Reward]


@dataclass(frozen=True)
class _Entry:
    fn: RewardFn
    multi_turn: bool


_REGISTRY: dict[str, _Entry] = {}


def register_reward(kind: str, fn: RewardFn | None = None, *, multi_turn: bool = False, replace: bool = False):
    """Register `fn` for task kind `kind` (usable as a decorator when `fn` is omitted)."""

    def add(f: RewardFn) -> RewardFn:
        if not callable(f):
            raise RLError(f"reward for {kind!r} must be callable, got {f!r}")
        if kind in _REGISTRY and not replace:
            raise RLError(f"a reward for kind {kind!r} is already registered (pass replace=True)")
        _REGISTRY[kind] = _Entry(f, multi_turn)
        return f

    return add if fn is None else add(fn)


def reward_kinds() -> list[str]:
    return sorted(_REGISTRY)


def get_reward(kind: str) -> RewardFn:
    if kind not in _REGISTRY:
        import glm45.envs  # noqa: F401  (registers the environments' reward kinds: ifeval, pathology, …)
    if kind not in _REGISTRY:
        raise RLError(f"no reward registered for task kind {kind!r}; known: {reward_kinds()}")
    return _REGISTRY[kind].fn


def compute_reward(task: Mapping[str, Any], output: str | Sequence[str], *, kind: str | None = None) -> Reward:
    """The reward of `output` for `task`, by `kind` (default `task["reward_kind"]`)."""
    if not isinstance(task, Mapping):
        raise RLError(f"a task must be a dict-like record, got {type(task).__name__}")
    kind = kind or task.get("reward_kind")
    if kind is None:
        raise RLError("the task has no 'reward_kind'; pass kind=")
    get_reward(kind)
    entry = _REGISTRY[kind]
    if entry.multi_turn:
        if isinstance(output, str) or not all(isinstance(t, str) for t in output):
            raise RLError(f"kind {kind!r} is multi-turn: output must be the list of assistant turns' texts")
    elif not isinstance(output, str):
        raise RLError(f"kind {kind!r} is single-turn: output must be one string")
    reward = entry.fn(task, output)
    if not isinstance(reward, Reward):
        raise RLError(f"reward function for {kind!r} returned {type(reward).__name__}, not Reward")
    return reward


def _field(task: Mapping[str, Any], name: str, kind: str) -> Any:
    if name not in task:
        raise RLError(f"{kind} task {task.get('id', '')!r} lacks the field {name!r}")
    return task[name]


def _content(task: Mapping[str, Any], output: str) -> str:
    return parse(output, enable_thinking=task.get("enable_thinking", True))["content"]


# ---- math --------------------------------------------------------------------------------------


def math_reward(task: Mapping[str, Any], output: str) -> Reward:
    from glm45.eval.math_answer import extract_answer, is_equivalent

    answer = _field(task, "answer", "math")
    extracted = extract_answer(_content(task, output), task.get("answer_format") or "boxed")
    if extracted is None:
        return Reward(0.0, {"extracted": None})
    return Reward(float(is_equivalent(extracted, str(answer))), {"extracted": extracted})


def arithmetic_reward(task: Mapping[str, Any], output: str) -> Reward:
    from glm45.tasks.arithmetic import ArithmeticProblem, check_answer

    names = [f.name for f in dataclasses.fields(ArithmeticProblem)]
    try:
        problem = ArithmeticProblem(**{k: task[k] for k in names if k in task})
    except TypeError as e:
        raise RLError(f"arithmetic task is not an ArithmeticProblem record: {e}") from None
    return Reward(float(check_answer(problem, _content(task, output))))


# ---- function calling ----------------------------------------------------------------------------


def _with_defaults(call: Mapping[str, Any], tools: Sequence[Mapping]) -> tuple[str, dict]:
    from glm45.tasks.tool_schema import function_specs, parse_arguments

    name, args = call["name"], dict(parse_arguments(call.get("arguments")))
    spec = function_specs(list(tools)).get(name) or {}
    for key, prop in ((spec.get("parameters") or {}).get("properties") or {}).items():
        if key not in args and isinstance(prop, Mapping) and "default" in prop:
            args[key] = prop["default"]
    return name, args


def _calls_equal(predicted: Sequence[Mapping], expected: Sequence[Mapping], tools: Sequence[Mapping]) -> bool:
    left = [_with_defaults(c, tools) for c in predicted]
    for want in (_with_defaults(c, tools) for c in expected):
        if want not in left:
            return False
        left.remove(want)
    return not left


def function_call_reward(task: Mapping[str, Any], output: str) -> Reward:
    tools = _field(task, "tools", "function_call")
    if "calls" in task:
        expected = task["calls"]
    elif "steps" in task and "step" in task:
        expected = task["steps"][task["step"]]
    else:
        raise RLError("function_call task needs 'calls' (the ground truth of this step) or 'steps' and 'step'")
    check = check_tool_calls(output, tools, enable_thinking=task.get("enable_thinking", True))
    if not check.ok:
        return Reward(0.0, {"format_errors": check.errors})
    return Reward(float(_calls_equal(check.calls, expected, tools)), {"calls": check.calls})


def format_penalty(turns: Sequence[str], tools: Sequence[Mapping] | None,
                   enable_thinking: bool = True) -> tuple[Reward | None, list[FormatCheck]]:
    """(Reward 0 naming the first malformed turn, or None when all are well-formed; the turns'
    checks up to and including the first bad one). A rollout loop runs `check_tool_calls` after
    each turn itself and halts at the first error; this is the same rule after the fact."""
    checks = []
    for i, turn in enumerate(turns):
        check = check_tool_calls(turn, tools, enable_thinking=enable_thinking)
        checks.append(check)
        if not check.ok:
            return Reward(0.0, {"format_error_turn": i, "format_errors": check.errors}), checks
    return None, checks


def with_format_penalty(outcome: Callable[[Mapping[str, Any], Sequence[str], list[FormatCheck]], Reward]
                        ) -> RewardFn:
    """A multi-turn reward: 0 on any malformed turn, else `outcome(task, turns, checks)`."""

    def reward(task: Mapping[str, Any], turns: Sequence[str]) -> Reward:
        penalty, checks = format_penalty(turns, task.get("tools"), task.get("enable_thinking", True))
        return penalty if penalty is not None else outcome(task, turns, checks)

    reward.__name__ = getattr(outcome, "__name__", "reward")
    return reward


def _tool_task_completed(task: Mapping[str, Any], turns: Sequence[str], checks: list[FormatCheck]) -> Reward:
    from glm45.tasks.tool_world import World, execute_call
    from glm45.tasks.tools import ToolTask

    names = [f.name for f in dataclasses.fields(ToolTask)]
    try:
        tool_task = ToolTask(**{k: task[k] for k in names if k in task})
    except TypeError as e:
        raise RLError(f"tool_agent task is not a ToolTask record: {e}") from None
    world = World()
    for check in checks:
        for call in check.calls:
            execute_call(call["name"], call["arguments"], world, strict=False)
    return Reward(float(tool_task.is_completed(world)), {"calls": [c for ch in checks for c in ch.calls]})


tool_agent_reward = with_format_penalty(_tool_task_completed)


# ---- code ------------------------------------------------------------------------------------------

# Solution and tests run in one namespace, as one program would; the marker that proves the tests
# all ran arrives on stdin and lives only in a local variable, so the solution cannot print it
# by reading the program's source (best effort: code in the same process can always dig).
_HARNESS = """\
import sys


def _run():
    marker = sys.stdin.readline().strip()
    namespace = {"__name__": "__main__"}
    with open("solution.py", encoding="utf-8") as f:
        exec(compile(f.read(), "solution.py", "exec"), namespace)
    with open("tests.py", encoding="utf-8") as f:
        exec(compile(f.read(), "tests.py", "exec"), namespace)
    sys.stdout.write("\\n" + marker + "\\n")


_run()
"""


def code_reward(task: Mapping[str, Any], output: str) -> Reward:
    from glm45.sandbox import run_python
    from glm45.tasks.code import extract_code

    tests = _field(task, "tests", "code")
    content = _content(task, output)
    if not content.strip():
        return Reward(0.0, {"error": "no content (reasoning never closed, or empty answer)"})
    code = extract_code(content)
    marker = f"ALL-TESTS-PASSED-{secrets.token_hex(8)}"
    result = run_python(_HARNESS, files={"solution.py": code, "tests.py": tests}, stdin=marker + "\n",
                        timeout_s=float(task.get("timeout_s", 10.0)), memory_mb=int(task.get("memory_mb", 512)))
    passed = result.ok and result.stdout.rstrip("\n").endswith("\n" + marker)
    info: dict[str, Any] = {"timed_out": result.timed_out}
    if not passed:
        info["stderr"] = result.stderr[-2000:]
    return Reward(float(passed), info)


register_reward("math", math_reward)
register_reward("arithmetic", arithmetic_reward)
register_reward("function_call", function_call_reward)
register_reward("tool_agent", tool_agent_reward, multi_turn=True)
register_reward("code", code_reward)
