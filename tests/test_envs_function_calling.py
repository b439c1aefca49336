"""Function-calling RL: step-wise records for the strict reward, end-to-end episodes with users."""

from __future__ import annotations

import pytest

from glm45.envs import ScriptedPolicy, SingleTurnEnv, make_env, run_episodes
from glm45.envs.function_calling import (
    LLMUserSimulator, MultiTurnToolEnv, OracleToolAgent, stepwise_items, user_instruction,
)
from glm45.eval.agent import STOP, USER_PROMPT
from glm45.tasks import generate_tool_tasks
from rl_helpers import ScriptedChat

KINDS = ("single", "multi", "parallel", "irrelevant", "multiturn")


@pytest.fixture(scope="module")
def tasks():
    return generate_tool_tasks(30, seed=3, kinds=KINDS)


def _calls_message(calls):
    return {"role": "assistant", "content": "", "tool_calls": [dict(c) for c in calls]}


def test_stepwise_items_cover_every_assistant_turn(tasks):
    items = stepwise_items(tasks)
    for task in tasks:
        mine = [it for it in items if it["id"].startswith(task.id + "/")]
        reference = task.reference_messages(thinking=False)
        assert len(mine) == sum(m["role"] == "assistant" for m in reference)
        # the prefix of turn k holds the earlier calls and their results
        for it in mine:
            assert it["messages"] == reference[: len(it["messages"])]
            assert reference[len(it["messages"])]["role"] == "assistant"
    assert {it["reward_kind"] for it in items} == {"function_call"}
    headed = stepwise_items(tasks, system="Be brief.")
    assert [it["calls"] for it in headed] == [it["calls"] for it in items]
    assert all(h["messages"] == [{"role": "system", "content": "Be brief."}, *it["messages"]]
               for h, it in zip(headed, items))


def test_stepwise_planted_good_and_bad(tasks):
    items = stepwise_items(tasks)
    env = SingleTurnEnv()
    for it in items:
        env.reset(it)
        if it["calls"]:
            good = _calls_message(reversed(it["calls"]))  # order within a turn does not matter
        else:
            good = {"role": "assistant", "content": "Here you go."}
        assert env.step(good).reward == 1.0, it["id"]
        env.reset(it)
        if it["calls"]:
            wrong = [dict(c, arguments=dict(c["arguments"])) for c in it["calls"]]
            key = next(iter(wrong[0]["arguments"]), None)
            if key is None:
                continue
            value = wrong[0]["arguments"][key]
            wrong[0]["arguments"][key] = value + 1 if isinstance(value, (int, float)) else f"{value}x"
            bad = _calls_message(wrong)
        else:
            bad = _calls_message([{"name": "get_weather", "arguments": {"city": "Paris"}}])
        assert env.step(bad).reward == 0.0, it["id"]


def test_multiturn_oracle_completes_every_task(tasks):
    results = run_episodes([MultiTurnToolEnv() for _ in tasks], tasks, ScriptedPolicy(OracleToolAgent))
    assert all(r.reward == 1.0 for r in results), [r.info for r in results if r.reward < 1]
    clarified = [r for t, r in zip(tasks, results) if t.kind == "multiturn"]
    assert clarified and all(any(m["role"] == "user" for m in r.messages[2:]) for r in clarified)


def test_multiturn_failures(tasks):
    task = next(t for t in tasks if t.kind == "multiturn" and t.steps[0][0]["name"] in ("set_alarm", "add_todo"))
    # acting without asking for the missing information: the world does not reach the goal
    env = MultiTurnToolEnv()
    env.reset(task)
    call = dict(task.steps[0][0])
    guessed = dict(call["arguments"])
    if "time" in guessed:
        guessed["time"] = "23:59" if guessed["time"] != "23:59" else "00:01"
    else:
        guessed["priority"] = 1 if guessed["priority"] != 1 else 2
    env.step(_calls_message([{"name": call["name"], "arguments": guessed}]))
    result = env.step({"role": "assistant", "content": "Done."})
    assert result.done and result.reward == 0.0 and result.info["completed"] is False
    # a malformed call halts the episode with 0 even if everything else would be right
    env.reset(task)
    result = env.step("<tool_call>set_alarm\n<arg_key>time</arg_key>\n<arg_value>7am</arg_value>\n</tool_call>")
    assert result.done and result.reward == 0.0 and result.info["end"] == "format_error"


def test_llm_user_with_the_figure_11_prompt(tasks):
    task = next(t for t in tasks if t.kind == "multiturn")
    backend = ScriptedChat([task.followups[0]["reply"], STOP])
    env = MultiTurnToolEnv(user_backend=backend)
    results = run_episodes([env], [task], ScriptedPolicy(OracleToolAgent))
    assert results[0].reward == 1.0, results[0].info
    system = backend.requests[0].messages[0]["content"]
    assert system.startswith(USER_PROMPT.split("{instruction}")[0])
    assert "Do not give away all the instruction at once" in system and task.user in system
    assert task.followups[0]["reply"] in system  # the hidden information, to be given when asked
    # roles flip for the user model: the agent's question arrives as a user turn
    assert backend.requests[0].messages[-1] == {"role": "user", "content": task.clarification}
    assert "only if, the agent asks" in user_instruction(task)


def test_llm_user_stop_and_turn_limit(tasks):
    task = tasks[0]
    sim = LLMUserSimulator(task, ScriptedChat(["#####STOP##"]))  # the paper's figure spells it this way too
    assert sim.respond({"role": "assistant", "content": "Anything else?"}) is None
    sim = LLMUserSimulator(task, ScriptedChat(["more", "more"]), max_turns=1)
    assert sim.respond("Anything else?") == {"role": "user", "content": "more"}
    assert sim.respond("Anything else?") is None


def test_registry_builds_the_environment(tasks):
    env = make_env("function_calling", max_turns=3)
    env.reset(tasks[0].to_dict())
    assert env.max_turns == 3 and env.tools == tasks[0].tools
