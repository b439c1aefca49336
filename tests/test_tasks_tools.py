import json
from collections import Counter

import pytest

from glm45.tasks.common import TaskError, split_of
from glm45.tasks.tool_world import REGISTRY, World, execute_call, tool_schemas
from glm45.tasks.tools import KINDS, ToolCallError, ToolTask, generate_tool_tasks, score_calls, validate_call
from glm45.tasks.user_sim import UserSimulator


@pytest.fixture(scope="module")
def tasks():
    return generate_tool_tasks(250, seed=0, kinds=KINDS)


def test_registry_schemas_are_openai_format():
    assert len(REGISTRY) >= 12
    for schema in tool_schemas():
        assert schema["type"] == "function"
        fn = schema["function"]
        assert set(fn) == {"name", "description", "parameters"}
        params = fn["parameters"]
        assert params["type"] == "object" and set(params["required"]) <= set(params["properties"])
    with pytest.raises(ToolCallError, match="unknown tools"):
        tool_schemas(["get_weather", "teleport"])


def test_deterministic(tasks):
    again = generate_tool_tasks(250, seed=0, kinds=KINDS)
    assert [t.to_dict() for t in again] == [t.to_dict() for t in tasks]
    assert [t.user for t in generate_tool_tasks(30, seed=1, kinds=KINDS)] != [t.user for t in tasks[:30]]
    assert {t.kind for t in tasks} == set(KINDS)


def test_reference_trajectories_validate_and_execute(tasks):
    for task in tasks:
        assert all(f["function"]["name"] for f in task.tools)
        world = World()
        messages = task.reference_messages(thinking=True)
        results = {m["tool_call_id"]: json.loads(m["content"]) for m in messages if m["role"] == "tool"}
        calls = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls", [])]
        assert len(calls) == len(task.calls) == len(results)
        for call in calls:
            assert validate_call(call, task.tools) == [], (task.user, call)
            got = execute_call(call["function"]["name"], call["function"]["arguments"], world)
            assert got == results[call["id"]] and "error" not in got, (task.user, got)
        assert task.is_completed(world), task.user
        assert score_calls([c["function"] for c in calls], task)["exact"]
        assert all("reasoning_content" in m for m in messages if m["role"] == "assistant")
        assert messages[-1] == {"role": "assistant", "reasoning_content": task.thoughts[-1], "content": task.answer}
        assert not any("reasoning_content" in m for m in task.reference_messages(thinking=False))
        assert ToolTask(**json.loads(json.dumps(task.to_dict()))) == task


def test_kinds_have_their_shape(tasks):
    by_kind = {k: [t for t in tasks if t.kind == k] for k in KINDS}
    assert all(len(t.steps) == 1 and len(t.calls) == 1 for t in by_kind["single"])
    assert all(len(t.steps) == 2 and len(t.calls) == 2 for t in by_kind["multi"])
    assert all(len(t.steps) == 1 and len(t.calls) == 2 for t in by_kind["parallel"])
    for t in by_kind["irrelevant"]:
        assert t.calls == [] and len(t.tools) >= 1
        assert [m["role"] for m in t.reference_messages()] == ["user", "assistant"]
    for t in by_kind["multi"]:  # the second call uses a value only the first result holds
        found = [str(v) for v in _scalars(t.results[0][0]) if str(v) not in t.user]
        args = [str(v) for v in t.steps[1][0]["arguments"].values()]
        assert any(f in a for f in found for a in args), t.user
    for t in tasks:  # needed tools are offered, plus distractors
        offered = [f["function"]["name"] for f in t.tools]
        assert {c["name"] for c in t.calls} <= set(offered) and len(offered) > len({c["name"] for c in t.calls})


def _scalars(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in _scalars(v)]
    if isinstance(value, list):
        return [x for v in value for x in _scalars(v)]
    return [value]


def test_a_kind_listed_twice_is_drawn_twice_as_often():
    counts = Counter(t.kind for t in generate_tool_tasks(600, 3, kinds=("single", "single", "irrelevant")))
    assert set(counts) == {"single", "irrelevant"}
    assert 0.6 < counts["single"] / 600 < 0.73  # 2/3 expected; 600 draws put it within ±0.06 at 3.5 sigma


def test_score_calls_diagnoses_errors():
    task = next(t for t in generate_tool_tasks(50, seed=2, kinds=("multi",)) if t.calls[1]["name"] == "send_email")
    good = [dict(c) for c in task.calls]
    assert score_calls(good, task)["exact"]
    # OpenAI wire format with JSON-string arguments, other order, other case: still exact
    shouted = [{k: v.upper() if isinstance(v, str) else v for k, v in c["arguments"].items()} for c in good]
    wire = [{"id": "x", "type": "function", "function": {"name": c["name"], "arguments": json.dumps(a)}}
            for c, a in reversed(list(zip(good, shouted)))]
    assert score_calls(wire, task)["exact"]

    wrong_args = [good[0], {"name": "send_email", "arguments": {**good[1]["arguments"], "subject": "Other"}}]
    s = score_calls(wrong_args, task)
    assert not s["exact"] and s["wrong_arguments"] == 1 and s["matched"] == 1 and "subject" in s["messages"][0]

    wrong_name = [good[0], {"name": "send_text", "arguments": good[1]["arguments"]}]
    s = score_calls(wrong_name, task)
    assert not s["exact"] and s["wrong_name"] == 1 and s["wrong_arguments"] == 0

    s = score_calls(good[:1], task)
    assert not s["exact"] and s["missing"] == 1 and s["recall"] == 0.5 and s["precision"] == 1.0

    s = score_calls(good + [good[0]], task)
    assert not s["exact"] and s["extra"] == 1

    s = score_calls([good[0], {"name": "send_email", "arguments": "{not json"}], task)
    assert not s["exact"] and s["invalid"] == 1 and s["missing"] == 1

    assert score_calls(good[1:], task, step=1)["exact"] and not score_calls(good[:1], task, step=1)["exact"]


def test_score_calls_fills_defaults_and_irrelevant():
    task = next(t for t in generate_tool_tasks(80, seed=0, kinds=("single",))
                if t.calls[0]["name"] == "get_weather" and "unit" not in t.calls[0]["arguments"])
    explicit = {"name": "get_weather", "arguments": {**task.calls[0]["arguments"], "unit": "celsius"}}
    assert score_calls([explicit], task)["exact"]
    other = {"name": "get_weather", "arguments": {**task.calls[0]["arguments"], "unit": "fahrenheit"}}
    assert not score_calls([other], task)["exact"]

    irrelevant = generate_tool_tasks(1, seed=0, kinds=("irrelevant",))[0]
    assert score_calls([], irrelevant)["exact"]
    s = score_calls([{"name": "calculator", "arguments": {"expression": "1+1"}}], irrelevant)
    assert not s["exact"] and s["extra"] == 1


def test_validate_call_problems():
    tools = tool_schemas(["add_todo", "get_weather", "set_alarm", "convert_currency"])
    assert validate_call({"name": "add_todo", "arguments": {"item": "x", "priority": 3}}, tools) == []
    cases = {
        "unknown tool": {"name": "fly", "arguments": {}},
        "missing required argument 'priority'": {"name": "add_todo", "arguments": {"item": "x"}},
        "unknown argument 'when'": {"name": "add_todo", "arguments": {"item": "x", "priority": 2, "when": "now"}},
        "expected integer": {"name": "add_todo", "arguments": {"item": "x", "priority": "3"}},
        "above the maximum": {"name": "add_todo", "arguments": {"item": "x", "priority": 9}},
        "not one of": {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "kelvin"}},
        "does not match the pattern": {"name": "set_alarm", "arguments": {"time": "7am"}},
        "expected number": {"name": "convert_currency",
                            "arguments": {"amount": True, "from_currency": "USD", "to_currency": "EUR"}},
        "not valid JSON": {"name": "add_todo", "arguments": "{'item': 1}"},
    }
    for needle, call in cases.items():
        problems = validate_call(call, tools)
        assert any(needle in p for p in problems), (needle, problems)
    # a tool that exists but was not offered is unknown to this call
    assert "unknown tool" in validate_call({"name": "lookup_stock", "arguments": {"symbol": "ACME"}}, tools)[0]


def test_execute_call_world_and_errors():
    usd_eur = {"amount": 100, "from_currency": "USD", "to_currency": "EUR"}
    assert execute_call("convert_currency", usd_eur)["result"] == 92.0
    assert execute_call("calculator", {"expression": "(2 + 3) * 4"})["result"] == 20
    assert "error" in execute_call("calculator", {"expression": "__import__('os')"})
    assert "error" in execute_call("get_weather", {"city": "Atlantis"})
    as_json = '{"city": "Paris", "unit": "fahrenheit"}'
    assert execute_call("get_weather", {"city": "paris", "unit": "fahrenheit"}) == execute_call("get_weather", as_json)
    w = World()
    w.call("set_alarm", {"time": "07:30", "label": "gym"})
    w.call("add_todo", {"item": "pay rent", "priority": 5})
    assert w.snapshot()["alarms"] == [{"alarm_id": "alarm-1", "time": "07:30", "label": "gym"}]
    assert [c["name"] for c in w.log] == ["set_alarm", "add_todo"]
    with pytest.raises(ToolCallError, match="missing required argument 'priority'"):
        execute_call("add_todo", {"item": "x"}, w)
    with pytest.raises(ToolCallError, match="unknown tool"):
        execute_call("teleport", {})
    assert "unknown tool" in execute_call("teleport", {}, strict=False)["error"]
    assert len(w.log) == 2  # rejected calls do not run


def test_is_completed_rejects_wrong_outcomes():
    task = next(t for t in generate_tool_tasks(50, seed=5, kinds=("single",)) if t.calls[0]["name"] == "set_alarm")
    assert not task.is_completed(World())
    w = World()
    args = dict(task.calls[0]["arguments"], time="03:03")
    w.call("set_alarm", args)
    assert not task.is_completed(w)
    read_only = next(t for t in generate_tool_tasks(80, seed=5, kinds=("single",))
                     if t.calls[0]["name"] == "lookup_stock")
    w = World()
    w.call("lookup_stock", {"symbol": "ZZZZ" if read_only.calls[0]["arguments"]["symbol"] != "ZZZZ" else "ACME"})
    assert not read_only.is_completed(w)
    irrelevant = generate_tool_tasks(1, seed=0, kinds=("irrelevant",))[0]
    assert irrelevant.is_completed(World()) and not irrelevant.is_completed(w)


def test_user_simulator_supplies_missing_information():
    tasks = generate_tool_tasks(40, seed=0, kinds=("multiturn",))
    for task in tasks:
        reply = task.followups[0]["reply"]
        sim = UserSimulator(task)
        assert sim.first_message() == {"role": "user", "content": task.user}
        assert reply not in task.user and not sim.informed
        # The reference dialogue, driven by the simulator and the tools, completes the task.
        world, ref = World(), task.reference_messages()
        answer = sim.respond(ref[1])
        assert answer == ref[2] and sim.informed
        for m in ref[3:]:
            for c in m.get("tool_calls", []):
                execute_call(c["function"]["name"], c["function"]["arguments"], world)
        assert sim.respond(ref[-1]) is None
        assert task.is_completed(world)
        with pytest.raises(TaskError, match="tool calls"):
            sim.respond(ref[3])


def test_user_simulator_answers_what_was_asked():
    task = generate_tool_tasks(1, seed=0, kinds=("multiturn",))[0]
    task.followups = [{"keywords": ["city"], "reply": "Paris."}, {"keywords": ["time", "when"], "reply": "At 08:00."}]
    sim = UserSimulator(task, max_turns=3)
    assert sim.respond({"role": "assistant", "content": "When should it be?"})["content"] == "At 08:00."
    assert sim.respond("Which city?")["content"] == "Paris."
    assert sim.respond("Anything else?")["content"] == "That's all I need, thanks."
    assert sim.respond("Are you sure?") is None  # out of turns
    vague = UserSimulator(task)
    assert vague.respond("Could you tell me more?")["content"] == "Paris. At 08:00."
    assert UserSimulator(task).respond("Here you go.") is None


def test_splits_are_disjoint():
    train = generate_tool_tasks(600, seed=0, kinds=KINDS)
    test = generate_tool_tasks(300, seed=7, kinds=KINDS, split="test")
    def side(t):
        return "\n".join([t.user] + [f["reply"] for f in t.followups])
    assert {side(t) for t in train}.isdisjoint({side(t) for t in test})
    assert all(split_of(side(t)) == "test" for t in test)


@pytest.mark.parametrize("kwargs", [{"kinds": ()}, {"kinds": ("chat",)}, {"n_distractors": -1}, {"split": "valid"}])
def test_bad_arguments(kwargs):
    with pytest.raises(TaskError):
        generate_tool_tasks(2, seed=0, **kwargs)


def test_reference_calls_survive_the_chat_template():
    """Each reference tool-call turn, rendered with the GLM template and parsed back, scores exact."""
    from glm45.chat import parse, render

    for task in generate_tool_tasks(60, seed=3, kinds=KINDS):
        messages = task.reference_messages(thinking=True)
        turns = [i for i, m in enumerate(messages) if m.get("tool_calls")]
        for step, i in enumerate(turns):
            prefix = render(messages[:i], task.tools, add_generation_prompt=True)
            full = render(messages[: i + 1], task.tools)
            assert full.startswith(prefix)
            parsed = parse(full[len(prefix):], task.tools)
            assert score_calls(parsed["tool_calls"], task, step=step)["exact"], (task.user, parsed)
