"""The agent endpoint: message-list trajectories tokenised with the chat encoding, gathered into
groups and handed to the buffer, over HTTP."""

from __future__ import annotations

import httpx
import pytest

from glm45.chat import encode_chat
from glm45.rl.agent_endpoint import TrajectoryCollector, create_app, trajectory_to_sample
from glm45.rl.buffer import DataBuffer
from glm45.rl.errors import RLError
from glm45.serve.server import ServerThread
from glm45.tokenizer import GLMTokenizer
from rl_helpers import parity_tasks, tiny_dir

TOOLS = [{"type": "function", "function": {"name": "find", "description": "Look up a city.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def _trajectory(answer: str = "Sunny in Oslo.") -> list[dict]:
    return [{"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": "", "reasoning_content": "Look it up.",
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "find", "arguments": {"city": "Oslo"}}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "content": answer}]


@pytest.fixture(scope="module")
def tok() -> GLMTokenizer:
    return GLMTokenizer.from_pretrained(tiny_dir())


def test_trajectory_to_sample_masks(tok):
    messages = _trajectory()
    s = trajectory_to_sample(tok, messages, 1.0, tools=TOOLS, group_id=5, weight_version=2)
    ids, mask = encode_chat(tok, messages, TOOLS)
    assert s.prompt_ids + s.response_ids == ids and s.loss_mask == mask[len(s.prompt_ids):]
    assert mask[len(s.prompt_ids) - 1] == 0 and s.loss_mask[0] == 1  # the prompt ends where training starts
    assert 0 in s.loss_mask  # the tool result is not trained
    assert "sunny" not in tok.decode([t for t, m in zip(s.response_ids, s.loss_mask) if m])
    assert s.reward == 1.0 and s.group_id == 5 and s.weight_version == 2 and s.rollout_logprobs is None
    assert s.prompt["messages"] == messages[:1]
    with pytest.raises(RLError, match="no assistant turn"):
        trajectory_to_sample(tok, messages[:1], 1.0)
    with pytest.raises(RLError, match="reward must be a number"):
        trajectory_to_sample(tok, messages, "good")


def test_collector_groups_by_name(tok):
    got = []
    collector = TrajectoryCollector(tok, 2, lambda g: got.append(g) or True, version=lambda: 7)
    first = collector.add({"messages": _trajectory(), "tools": TOOLS, "reward": 1.0, "group": "task-a"})
    other = collector.add({"messages": _trajectory(), "tools": TOOLS, "reward": 0.0, "group": "task-b"})
    assert first["status"] == other["status"] == "pending" and first["group_id"] != other["group_id"] < 0
    done = collector.add({"messages": _trajectory("Rain."), "tools": TOOLS, "reward": 0.0, "group": "task-a"})
    assert done["status"] == "accepted" and len(got) == 1
    (group,) = got
    assert [s.index for s in group] == [0, 1] and [s.reward for s in group] == [1.0, 0.0]
    assert {s.group_id for s in group} == {first["group_id"]} and all(s.weight_version == 7 for s in group)
    assert collector.status()["pending_groups"] == 1
    with pytest.raises(RLError, match="group"):
        collector.add({"messages": _trajectory(), "reward": 1.0})


def test_endpoint_over_http(tok):
    buffer = DataBuffer(parity_tasks(4), filters=[])
    collector = TrajectoryCollector(tok, 2, buffer.add_group)
    with ServerThread(create_app(collector, buffer=buffer)) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            tasks = http.get("/v1/tasks", params={"n": 1}).json()["tasks"]
            assert tasks[0]["group_size"] == 2 and tasks[0]["task"] == parity_tasks(1)[0]
            gid = tasks[0]["group_id"]
            for reward in (1.0, 0.0):
                r = http.post("/v1/trajectories", json={"messages": _trajectory(), "tools": TOOLS, "reward": reward,
                                                        "group_id": gid, "task": tasks[0]["task"]})
                assert r.status_code == 200
            assert r.json()["status"] == "accepted"
            bad = http.post("/v1/trajectories", json={"messages": "hi", "reward": 1.0, "group": "x"})
            assert bad.status_code == 400 and "messages" in bad.json()["error"]["message"]
            status = http.get("/v1/status").json()
            assert status["buffer_groups"] == 1 and status["groups_accepted"] == 1
    (group,) = buffer.pop_groups(1)
    assert [s.group_id for s in group] == [gid, gid] and group[0].prompt == parity_tasks(1)[0]
