"""Built-in synthetic tasks (arithmetic, tool_calls, agent, heldout_text): held-out items, solvable by
the reference answers, failed by wrong ones; the tool_world environment and the rule-based user."""

from __future__ import annotations

import pytest

from glm45.eval import builtin
from glm45.eval.agent import STOP, Episode, RuleUser, check_episode, make_environment
from glm45.eval.backend import ChatRequest, ChatResult, ChatSample, EvalError
from glm45.eval.runner import evaluate
from glm45.eval.tasks import list_tasks, make_task, resolve_task
from glm45.tasks import generate_arithmetic, generate_tool_tasks, split_of


def _reference_tasks():
    return (generate_tool_tasks(builtin.N_ITEMS, 0, builtin.TOOL_CALL_KINDS, split="test", unique=True)
            + generate_tool_tasks(builtin.N_ITEMS, 1, builtin.AGENT_KINDS, split="test", unique=True))


class Oracle:
    """Answers every built-in chat task with its reference: the boxed answer, or the reference
    trajectory's next assistant turn (found from what the user has said so far)."""

    name = "oracle"

    def __init__(self, silent: bool = False):
        self.silent = silent  # never call a tool, never ask: plain text only
        self.answers = {p.question: p.answer for p in generate_arithmetic(builtin.N_ITEMS, 0, [1, 2], split="test",
                                                                           unique=True)}
        self.tasks = _reference_tasks()

    def _turn(self, request: ChatRequest) -> ChatSample:
        said = [m["content"] for m in request.messages if m["role"] == "user"]
        if said[0] in self.answers:
            return ChatSample(content=f"The answer is \\boxed{{{self.answers[said[0]]}}}.")
        if self.silent:
            return ChatSample(content="Done.")
        task = next(t for t in self.tasks
                    if [t.user, *(f["reply"] for f in t.followups)][:len(said)] == said)
        reference = [m for m in task.reference_messages(False) if m["role"] == "assistant"]
        turn = reference[sum(m["role"] == "assistant" for m in request.messages)]
        calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                 for c in turn.get("tool_calls") or []]
        return ChatSample(content=turn["content"], tool_calls=calls)

    def chat(self, requests, on_result=None):
        return [ChatResult([self._turn(r)]) for r in requests]


def test_builtin_tasks_are_registered_held_out_and_small():
    listed = list_tasks()
    assert {name: listed[name][0] for name in ("arithmetic", "tool_calls", "agent", "heldout_text")} == {
        "arithmetic": "math", "tool_calls": "function_call", "agent": "agent", "heldout_text": "perplexity"}
    arithmetic, tools, agent, text = (resolve_task(n) for n in ("arithmetic", "tool_calls", "agent", "heldout_text"))
    for task in (arithmetic, tools, agent, text):
        assert len(task.records) == builtin.N_ITEMS and len({r["id"] for r in task.records}) == builtin.N_ITEMS
    assert all(split_of(r["messages"][0]["content"]) == "test" for r in arithmetic.records)
    assert all(split_of(r["question"]) == "test" for r in tools.records)
    assert {r["tool_kind"] for r in tools.records} == set(builtin.TOOL_CALL_KINDS)
    assert {r["tool_kind"] for r in agent.records} == set(builtin.AGENT_KINDS)
    assert all(r["text"].strip() for r in text.records)
    assert sum(r["text"].startswith("Question: ") for r in text.records) == builtin.N_ITEMS // 2
    assert resolve_task("arithmetic").records == arithmetic.records  # deterministic


def test_reference_answers_score_full_marks_and_wrong_ones_do_not(tmp_path):
    tasks = [resolve_task(n) for n in ("arithmetic", "tool_calls", "agent")]
    results = evaluate(Oracle(), tasks, tmp_path / "oracle", show_progress=False)
    assert {n: t["metrics"]["avg@1"] for n, t in results["tasks"].items()} == {
        "arithmetic": 1.0, "tool_calls": 1.0, "agent": 1.0}
    silent = evaluate(Oracle(silent=True), tasks[1:], tmp_path / "silent", show_progress=False)["tasks"]
    irrelevant = [r["tool_kind"] == "irrelevant" for r in tasks[1].records]
    assert [it["score"] for it in silent["tool_calls"]["items"]] == [float(x) for x in irrelevant]
    assert silent["agent"]["metrics"]["avg@1"] == 0.0  # every agent task needs calls
    assert all(it["samples"][0]["details"]["end"] == "user_stop" for it in silent["agent"]["items"])


def test_possible_answers_let_defaults_be_left_out():
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "default": "celsius"}}, "required": ["city"]}}}
    assert builtin.possible_answer({"name": "get_weather", "arguments": {"city": "Oslo"}}, tool) == {
        "get_weather": {"city": ["Oslo"], "unit": ["celsius", ""]}}
    assert builtin.possible_answer({"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}},
                                   tool)["get_weather"]["unit"] == ["celsius", ""]
    assert builtin.possible_answer({"name": "get_weather", "arguments": {"city": "Oslo", "unit": "fahrenheit"}},
                                   tool)["get_weather"]["unit"] == ["fahrenheit"]


def test_tool_world_environment():
    env = make_environment("tool_world", {"tools": ["get_weather", "set_alarm"], "stateful": True})
    assert [t["function"]["name"] for t in env.tools()] == ["get_weather", "set_alarm"]
    assert '"condition": "cloudy"' in env.call("get_weather", {"city": "Paris"})
    assert "error" in env.call("send_email", {"to": "a@b.co", "subject": "s", "body": "b"})  # not offered
    assert "error" in env.call("set_alarm", {"time": "7 am"})  # schema-checked, answered as a tool would
    env.call("set_alarm", {"time": "07:00", "label": "GYM"})
    assert env.state()["alarms"] == [{"alarm_id": "alarm-1", "time": "07:00", "label": "gym"}]  # folded
    assert env.canonical_call("get_weather", {"city": " paris"}) == env.canonical_call(
        "get_weather", {"city": "Paris", "unit": "celsius"})
    assert make_environment("tool_world", {"tools": ["get_weather"], "stateful": False}).state() is None
    for config, message in [({"tools": ["no_such_tool"]}, "unknown tools"), ({}, "non-empty list"),
                            ({"tools": ["get_weather"], "colour": 1}, "unknown env_config")]:
        with pytest.raises(EvalError, match=message):
            make_environment("tool_world", config)


def test_stateless_checks_compare_calls_in_canonical_form():
    record = {"env": "tool_world", "env_config": {"tools": ["get_weather"], "stateful": False},
              "expected": {"actions": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}}
    env = make_environment("tool_world", record["env_config"])
    episode = Episode(env=env, user=RuleUser("Weather in Paris?", []), agent_request=None)
    episode.actions = [{"name": "get_weather", "arguments": {"city": "paris", "unit": "celsius"}, "result": ""}]
    assert check_episode(record, episode).value == 1.0
    episode.actions = [{"name": "get_weather", "arguments": {"city": "Rome"}, "result": ""}]
    score = check_episode(record, episode)
    assert score.value == 0.0 and "get_weather" in score.details["failures"][0]


def test_rule_user_answers_questions_about_what_it_left_out():
    user = RuleUser("Set an alarm.", [{"keywords": ["time", "when"], "reply": "At 07:00."}], max_turns=3)
    dialogue = [{"role": "user", "content": user.respond([])}]
    assert dialogue[0]["content"] == "Set an alarm."
    dialogue.append({"role": "agent", "content": "What time should it ring?"})
    assert user.respond(dialogue) == "At 07:00."
    dialogue += [{"role": "user", "content": "At 07:00."}, {"role": "agent", "content": "Your alarm is set."}]
    assert user.respond(dialogue) == STOP  # nothing asked: the user is done


def test_user_sim_records_are_validated():
    base = {"env": "tool_world", "env_config": {"tools": ["get_weather"]}, "expected": {"actions": []}}
    make_task("ok", "agent", [(1, {**base, "user_sim": {"request": "Hi", "followups": []}})], "<t>")
    for bad, message in [({"followups": []}, "missing field 'request'"),
                         ({"request": "Hi", "followups": [{"reply": "x"}]}, "followups")]:
        with pytest.raises(EvalError, match=message):
            make_task("bad", "agent", [(1, {**base, "user_sim": bad})], "<t>")
