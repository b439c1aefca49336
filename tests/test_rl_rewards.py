"""Rewards on planted good and bad outputs: math, arithmetic, strict function calls, the process
format penalty of agent trajectories, code run in the sandbox, and the registry."""

from __future__ import annotations

import pytest

from glm45.chat import render
from glm45.rl import RLError
from glm45.rl.rewards import (Reward, compute_reward, format_penalty, get_reward, register_reward, reward_kinds,
                              with_format_penalty)
from glm45.rl.tool_format import check_tool_calls
from glm45.tasks import generate_arithmetic, generate_code_tasks, generate_tool_tasks, tool_schemas


def assistant_text(content: str = "", reasoning: str = "Let me think.", calls: list[dict] | None = None) -> str:
    """What the model writes after <|assistant|> for this turn (via the official template)."""
    msg = {"role": "assistant", "content": content, "reasoning_content": reasoning}
    if calls:
        msg["tool_calls"] = [{"type": "function", "function": c} for c in calls]
    text = render([{"role": "user", "content": "x"}, msg, {"role": "user", "content": "y"}])
    return text.split("<|assistant|>", 1)[1].split("<|user|>", 1)[0]


# ---- math ----------------------------------------------------------------------------------------


def test_math_reward():
    task = {"reward_kind": "math", "answer": "1/2"}
    assert compute_reward(task, assistant_text("So it is \\boxed{\\frac{1}{2}}.")).value == 1.0
    assert compute_reward(task, assistant_text("So it is \\boxed{0.5}.")).value == 1.0
    wrong = compute_reward(task, assistant_text("So it is \\boxed{0.25}."))
    assert wrong.value == 0.0 and wrong.info["extracted"] == "0.25"
    # The answer must be in the content: reasoning that never closes (truncated) earns nothing.
    assert compute_reward(task, "\n<think>the answer is \\boxed{1/2} I think").value == 0.0
    assert compute_reward(task, assistant_text("no box here")).value == 0.0
    line = {"reward_kind": "math", "answer": 12, "answer_format": "answer_line"}
    assert compute_reward(line, assistant_text("Work...\nAnswer: 12")).value == 1.0


def test_arithmetic_reward_reuses_the_task_checker():
    problem = generate_arithmetic(1, seed=0)[0]
    task = {"reward_kind": "arithmetic", **problem.__dict__}
    assert compute_reward(task, assistant_text(f"\\boxed{{{problem.answer}}}", problem.reasoning)).value == 1.0
    assert compute_reward(task, assistant_text(f"\\boxed{{{int(problem.answer) + 1}}}")).value == 0.0
    assert compute_reward(task, f"\n<think>{problem.reasoning} = {problem.answer}").value == 0.0  # cut off


# ---- function calls ---------------------------------------------------------------------------------

TOOLS = tool_schemas(["get_weather", "send_email", "set_alarm"])
PARIS = {"name": "get_weather", "arguments": {"city": "Paris"}}


def fc(expected, output):
    return compute_reward({"reward_kind": "function_call", "tools": TOOLS, "calls": expected}, output)


def test_strict_function_call_reward():
    assert fc([PARIS], assistant_text(calls=[PARIS])).value == 1.0
    # A schema default spelled out is the same call.
    assert fc([PARIS], assistant_text(calls=[{"name": "get_weather",
                                              "arguments": {"city": "Paris", "unit": "celsius"}}])).value == 1.0
    assert fc([PARIS], assistant_text(calls=[{"name": "get_weather", "arguments": {"city": "paris"}}])).value == 0.0
    assert fc([PARIS], assistant_text(calls=[{"name": "get_weather",
                                              "arguments": {"city": "Paris", "unit": "fahrenheit"}}])).value == 0.0
    assert fc([PARIS], assistant_text(calls=[PARIS, PARIS])).value == 0.0  # an extra call
    assert fc([PARIS], assistant_text("It is sunny.")).value == 0.0  # no call
    # Parallel calls match in any order.
    rome = {"name": "get_weather", "arguments": {"city": "Rome"}}
    assert fc([PARIS, rome], assistant_text(calls=[rome, PARIS])).value == 1.0
    # Irrelevant request: the right answer is no call.
    assert fc([], assistant_text("I cannot do that.")).value == 1.0
    assert fc([], assistant_text(calls=[PARIS])).value == 0.0


@pytest.mark.parametrize("bad, why", [
    ("<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n", "ends inside"),
    ("<tool_call>get_weather\n<arg_key>city</arg_key> oops <arg_value>Paris</arg_value>\n</tool_call>", "stray text"),
    ("<tool_call>\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>", "bad function name"),
    ("<tool_call>get weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>", "bad function name"),
    ("<tool_call>get_weather\n<arg_key>city</arg_key>\n</tool_call>", "expected <arg_value>"),
    ("<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
     "<arg_key>city</arg_key>\n<arg_value>Rome</arg_value>\n</tool_call>", "given twice"),
    ("Paris</arg_value> is nice", "outside a tool call"),
    ("<tool_call>get_forecast\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>", "unknown tool"),
    ("<tool_call>get_weather\n<arg_key>town</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>", "town"),
    ("<tool_call>set_alarm\n<arg_key>time</arg_key>\n<arg_value>25:99</arg_value>\n</tool_call>", "pattern"),
])
def test_any_format_error_gives_zero(bad, why):
    check = check_tool_calls("\n<think>ok</think>\n" + bad, TOOLS)
    assert not check.ok and any(why in e for e in check.errors), check.errors
    reward = fc([PARIS], "\n<think>ok</think>\n" + bad)
    assert reward.value == 0.0 and reward.info["format_errors"]


def test_format_check_accepts_what_the_template_writes():
    code = {"name": "send_email", "arguments": {"to": "a@b.com", "subject": "x",
                                                "body": "<arg_key>not a key</arg_key> and </tool_call> inside"}}
    check = check_tool_calls(assistant_text("Sending.", calls=[code, PARIS]), TOOLS)
    assert check.ok, check.errors
    assert check.calls == [code, PARIS]


def test_function_call_reward_from_a_tool_task_step():
    task = generate_tool_tasks(1, seed=0, kinds=["multi"])[0].to_dict()
    record = {**task, "reward_kind": "function_call", "step": 1}
    good = assistant_text(calls=task["steps"][1])
    assert compute_reward(record, good).value == 1.0
    assert compute_reward({**record, "step": 0}, good).value == 0.0


# ---- multi-turn agent reward with the process format penalty ---------------------------------------------


def test_tool_agent_reward_and_format_penalty():
    task = {**generate_tool_tasks(1, seed=0, kinds=["multi"])[0].to_dict(), "reward_kind": "tool_agent"}
    turns = [assistant_text(calls=step) for step in task["steps"]] + [assistant_text(task["answer"])]
    assert compute_reward(task, turns).value == 1.0
    # The right calls but one malformed turn on the way: the trace is halted, reward 0.
    broken = list(turns)
    broken[0] = broken[0].replace("</tool_call>", "")
    reward = compute_reward(task, broken)
    assert reward.value == 0.0 and reward.info["format_error_turn"] == 0
    penalty, checks = format_penalty(broken, task["tools"])
    assert penalty.value == 0.0 and len(checks) == 1
    # Well-formed but the email never goes out: the task is not completed.
    assert compute_reward(task, turns[:1] + turns[2:]).value == 0.0
    wrong_to = [assistant_text(calls=task["steps"][0]),
                assistant_text(calls=[{"name": "send_email", "arguments": {**task["steps"][1][0]["arguments"],
                                                                           "to": "someone@else.com"}}])]
    assert compute_reward(task, wrong_to).value == 0.0
    with pytest.raises(RLError, match="multi-turn"):
        compute_reward(task, turns[0])
    # The task's own kind survives next to reward_kind: an irrelevant request is completed by no call.
    irrelevant = {**generate_tool_tasks(1, seed=0, kinds=["irrelevant"])[0].to_dict(), "reward_kind": "tool_agent"}
    assert compute_reward(irrelevant, [assistant_text(irrelevant["answer"])]).value == 1.0
    assert "get_weather" in [t["function"]["name"] for t in irrelevant["tools"]]
    called = compute_reward(irrelevant, [assistant_text(calls=[PARIS])])
    assert called.value == 0.0 and "format_errors" not in called.info  # well-formed, but not wanted


# ---- code ---------------------------------------------------------------------------------------------


def test_code_reward_runs_hidden_tests_in_the_sandbox():
    ct = generate_code_tasks(1, seed=0)[0]
    task = {"reward_kind": "code", "tests": ct.tests, "timeout_s": 5}
    fence = lambda src: assistant_text(f"Here it is.\n```python\n{src}\n```")  # noqa: E731
    assert compute_reward(task, fence(ct.reference)).value == 1.0
    wrong = compute_reward(task, fence(f"def {ct.entry_point}(*args, **kwargs):\n    return None"))
    assert wrong.value == 0.0 and "Error" in wrong.info["stderr"]
    # Leaving before the tests run is not passing them.
    assert compute_reward(task, fence("import sys\nsys.exit(0)")).value == 0.0
    assert compute_reward(task, fence("import os\nprint('ALL-TESTS-PASSED')\nos._exit(0)")).value == 0.0
    assert compute_reward(task, f"\n<think>```python\n{ct.reference}\n```").value == 0.0  # never answered


def test_code_reward_times_out():
    task = {"reward_kind": "code", "tests": "assert f() == 1", "timeout_s": 1}
    reward = compute_reward(task, assistant_text("```python\ndef f():\n    while True:\n        pass\n```"))
    assert reward.value == 0.0 and reward.info["timed_out"]


# ---- registry -------------------------------------------------------------------------------------------


def test_registry():
    assert {"math", "arithmetic", "function_call", "tool_agent", "code"} <= set(reward_kinds())
    with pytest.raises(RLError, match="no reward registered"):
        compute_reward({"reward_kind": "poetry"}, "roses")
    with pytest.raises(RLError, match="already registered"):
        register_reward("math", lambda task, out: Reward(1.0))
    with pytest.raises(RLError, match="no 'reward_kind'"):
        compute_reward({}, "x")
    with pytest.raises(RLError, match="single-turn"):
        compute_reward({"reward_kind": "math", "answer": 1}, ["a", "b"])

    @register_reward("test_length", replace=True)
    def length_reward(task, output):
        return Reward(float(len(output) <= task["limit"]))

    assert get_reward("test_length") is length_reward
    assert compute_reward({"reward_kind": "test_length", "limit": 3}, "abc").value == 1.0
    # A custom multi-turn outcome behind the process format penalty.
    register_reward("test_turns", with_format_penalty(lambda task, turns, checks: Reward(float(len(turns)))),
                    multi_turn=True, replace=True)
    assert compute_reward({"reward_kind": "test_turns", "tools": TOOLS}, ["a", "b"]).value == 2.0
    assert compute_reward({"reward_kind": "test_turns", "tools": TOOLS}, ["a", "<tool_call>x"]).value == 0.0
