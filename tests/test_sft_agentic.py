"""Agentic SFT data: tool registry (Python, built-in, simulated / MCP), task synthesis, trajectories
with a simulated user, judges."""

from __future__ import annotations

import json
from typing import Literal

import pytest

from glm45.eval.backend import ChatResult, ChatSample
from glm45.sft.agentic import (
    AgentTask,
    LLMJudge,
    LLMSimulator,
    ProtocolJudge,
    RolloutConfig,
    StateJudge,
    ToolError,
    Toolkit,
    builtin_tasks,
    generate_trajectories,
    judge_trajectories,
    synthesize_tasks,
)
from glm45.sft.agentic.judge import verdict
from glm45.sft.records import sample_document
from glm45.sft.verifiers import default_pipeline

MCP_LISTING = {"tools": [
    {"name": "create_ticket", "description": "Open a support ticket.",
     "inputSchema": {"type": "object", "properties": {
         "title": {"type": "string", "description": "Short title, e.g. Printer broken"},
         "priority": {"type": "string", "enum": ["low", "high"]}}, "required": ["title", "priority"]},
     "outputSchema": {"type": "object", "properties": {"ticket_id": {"type": "integer", "minimum": 1000,
                                                                      "maximum": 9999}}}},
    {"name": "lookup_order", "description": "Find an order by its number.",
     "inputSchema": {"type": "object", "properties": {"order": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}},
                     "required": ["order"]}},
]}


def tip(amount: float, percent: int = 15, style: Literal["round", "exact"] = "exact") -> dict:
    """Compute a tip.

    amount: the bill in dollars
    """
    value = amount * percent / 100
    return {"tip": round(value) if style == "round" else round(value, 2)}


def test_python_tool_schema_and_environment():
    kit = Toolkit()
    t = kit.add_function(tip)
    assert t.description == "Compute a tip."
    assert t.parameters == {"type": "object", "required": ["amount"], "properties": {
        "amount": {"type": "number", "description": "the bill in dollars"},
        "percent": {"type": "integer", "default": 15},
        "style": {"enum": ["round", "exact"], "default": "exact"}}}
    env = kit.environment()
    assert json.loads(env.call("tip", {"amount": 40})) == {"tip": 6.0}
    assert json.loads(env.call("tip", '{"amount": 40, "style": "round", "percent": 18}')) == {"tip": 7}
    assert "error" in json.loads(env.call("tip", {"amount": "forty"}))
    assert "unknown tool" in json.loads(env.call("rocket", {}))["error"]
    assert len(env.log) == 2  # failed calls never ran
    with pytest.raises(ToolError):
        kit.add_function(tip)
    with pytest.raises(ToolError):
        kit.add_function(lambda *a: a, name="star")


def test_simulated_mcp_tools_are_deterministic():
    kit = Toolkit()
    kit.add_mcp(MCP_LISTING)
    a, b = kit.environment(), kit.environment()
    args = {"title": "Printer broken", "priority": "high"}
    ra, rb = json.loads(a.call("create_ticket", args)), json.loads(b.call("create_ticket", args))
    assert ra == rb and 1000 <= ra["ticket_id"] <= 9999
    ack = json.loads(a.call("lookup_order", {"order": "2025-03-14"}))
    assert ack["status"] == "ok" and ack["arguments"] == {"order": "2025-03-14"}
    assert "error" in json.loads(a.call("lookup_order", {"order": "nope"}))  # pattern enforced
    assert kit.schemas(["lookup_order"])[0]["function"]["parameters"]["required"] == ["order"]


class EchoBackend:
    """A model that answers every request with the same text."""

    name = "echo"

    def __init__(self, text):
        self.text, self.requests = text, []

    def chat(self, requests, on_result=None):
        self.requests += list(requests)
        return [ChatResult([ChatSample(content=self.text) for _ in range(r.n)]) for r in requests]


def test_llm_simulator_parses_and_caches():
    kit = Toolkit(LLMSimulator(EchoBackend('```json\n{"ticket_id": 4242}\n```')))
    kit.add_mcp(MCP_LISTING)
    env = kit.environment()
    assert json.loads(env.call("create_ticket", {"title": "x", "priority": "low"})) == {"ticket_id": 4242}
    env.call("create_ticket", {"title": "x", "priority": "low"})
    assert len(kit.simulator.backend.requests) == 1


def test_task_synthesis_single_and_multi():
    kit = Toolkit()
    kit.add_mcp(MCP_LISTING)
    kit.add_function(tip)
    tasks = synthesize_tasks(kit, 12, seed=3)
    assert {t.kind for t in tasks} == {"single", "multi"}
    for t in tasks:
        assert 1 <= len(t.expected) <= 3 and (len(t.expected) == 1) == (t.kind == "single")
        env = kit.environment(t.tools)
        for call in t.expected:
            assert call["name"] in t.tools and call["name"] in t.user
            assert "error" not in json.loads(env.call(call["name"], call["arguments"]))
        assert t.is_completed(env)
    assert [t.to_dict() for t in tasks] == [t.to_dict() for t in synthesize_tasks(kit, 12, seed=3)]
    writer = EchoBackend("Please open a high-priority ticket titled Printer broken.")
    written = synthesize_tasks(kit, 2, seed=0, backend=writer)
    assert all(t.user == writer.text for t in written) and len(writer.requests) == 2
    for task, request in zip(written, writer.requests):
        assert all(json.dumps(v) in request.messages[0]["content"] for c in task.expected for v in c["arguments"].values())


class ReferenceAgent:
    """Plays the reference trajectory of each built-in task: the next reference assistant turn."""

    name = "reference"

    def __init__(self, tasks, corrupt: set[str] = frozenset()):
        self.by_user = {t.user: t for t in tasks}
        self.corrupt = corrupt

    def chat(self, requests, on_result=None):
        out = []
        for r in requests:
            task = self.by_user[next(m["content"] for m in r.messages if m["role"] == "user")]
            turn = sum(m["role"] == "assistant" for m in r.messages)
            refs = [m for m in task.reference if m["role"] == "assistant"]
            if turn >= len(refs):  # the user said something after the answer ("That's all I need")
                out.append(ChatResult([ChatSample(content="You're welcome.", reasoning_content="Nothing left.")]))
                continue
            ref = refs[turn]
            calls = [{"name": c["function"]["name"], "arguments": dict(c["function"]["arguments"])}
                     for c in ref.get("tool_calls") or []]
            if task.id in self.corrupt:
                for c in calls:
                    c["arguments"] = {k: (v + "x" if isinstance(v, str) else v) for k, v in c["arguments"].items()}
            out.append(ChatResult([ChatSample(content=ref["content"], reasoning_content=ref.get("reasoning_content", ""),
                                              tool_calls=calls)]))
        return out


def test_trajectories_with_simulated_user_and_judges():
    tasks = builtin_tasks(20, 3, kinds=("single", "multi", "parallel", "irrelevant", "multiturn"))
    stateful = {t.id for t in tasks if t.builtin and any(c["name"] in ("set_alarm", "add_todo", "create_event")
                                                        for c in t.expected)}
    agent = ReferenceAgent(tasks, corrupt=stateful)
    trajs = generate_trajectories(tasks, Toolkit.builtin(), agent, RolloutConfig(max_turns=6))
    assert len(trajs) == 20
    multiturn = [t for t in trajs if t.task.kind == "multiturn"]
    assert multiturn and all(sum(m["role"] == "user" for m in t.messages) == 2 for t in multiturn)
    assert all(t.episode.end == "user_stop" for t in trajs)
    kept, report = judge_trajectories(trajs, [StateJudge(), ProtocolJudge()])
    assert stateful and {t.task.id for t in kept} == {t.id for t in tasks} - stateful
    assert report["judges"]["terminal_state"] == 20 - len(stateful) and report["kept"] == len(kept)
    # the same trajectories as SFT samples pass the rejection-sampling pipeline
    samples = [sample_document(t.to_sample()) for t in kept]
    survivors, _ = default_pipeline().run(samples)
    assert len(survivors) == len(samples)


def test_llm_judge_votes():
    assert verdict("YES") and verdict("Reasoning... so the answer is YES.") and not verdict("NO")
    assert not verdict("yes and no: NO") and not verdict("maybe")
    tasks = builtin_tasks(3, 1, kinds=("single",))
    trajs = generate_trajectories(tasks, Toolkit.builtin(), ReferenceAgent(tasks))
    kept, report = judge_trajectories(trajs, [StateJudge(), LLMJudge(EchoBackend("NO"), votes=3)], min_votes=2)
    assert kept == [] and report["judges"]["terminal_state"] == 3
    kept, _ = judge_trajectories(trajs, [StateJudge(), LLMJudge(EchoBackend("YES"))])
    assert len(kept) == 3


def test_synthesized_tasks_end_to_end_with_llm_user():
    """A synthesized task, an agent that makes the expected calls, and an LLM user that stops."""
    kit = Toolkit()
    kit.add_mcp(MCP_LISTING)
    kit.add_function(tip)
    tasks = synthesize_tasks(kit, 4, seed=1)

    class Agent:
        name = "agent"

        def chat(self, requests, on_result=None):
            out = []
            for r in requests:
                task = next(t for t in tasks if t.user == r.messages[0]["content"])
                if r.messages[-1]["role"] == "user":
                    sample = ChatSample(tool_calls=[dict(c) for c in task.expected])
                else:
                    sample = ChatSample(content="All done.")
                out.append(ChatResult([sample]))
            return out

    user = EchoBackend("###STOP###")
    trajs = generate_trajectories(tasks, kit, Agent(), user_backend=user)
    assert len(user.requests) == 4  # one LLM-user turn each, after the agent's answer
    kept, _ = judge_trajectories(trajs, [StateJudge(), ProtocolJudge()])
    assert len(kept) == 4
    assert AgentTask.from_dict(trajs[0].to_sample()["meta"]["task"]).expected == tasks[0].expected
