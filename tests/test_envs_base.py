"""The environment contract: turn decoding, the process format penalty, max turns, the driver."""

from __future__ import annotations

import json

import pytest

from glm45.envs import EnvError, ScriptedPolicy, SingleTurnEnv, make_env, registered_envs, run_episodes
from glm45.envs.base import BackendPolicy, Step, ToolEnvironment, Turn, answer_text, message_text, read_turn
from glm45.eval.backend import ChatResult, ChatSample

TOOLS = [{"type": "function", "function": {"name": "add", "description": "add two integers", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"], "additionalProperties": False}}}]


class Adder(ToolEnvironment):
    """Answer `task["target"]` with the add tool's help: reward 1 for the right final number."""

    def _start(self, task):
        return [{"role": "user", "content": f"What is {task['a']} + {task['b']}?"}], TOOLS

    def call_tool(self, name, arguments):
        return json.dumps({"sum": arguments["a"] + arguments["b"]})

    def _text_turn(self, turn: Turn) -> Step:
        ok = turn.content.strip() == str(self.task["a"] + self.task["b"])
        return Step(None, float(ok), True, {"said": turn.content})


CALL_TEXT = "<think>use the tool</think>\n<tool_call>add\n<arg_key>a</arg_key>\n<arg_value>2</arg_value>\n" \
            "<arg_key>b</arg_key>\n<arg_value>3</arg_value>\n</tool_call>"


def test_read_turn_text_and_message():
    t = read_turn(CALL_TEXT, TOOLS)
    assert t.format_errors == [] and t.tool_calls == [{"name": "add", "arguments": {"a": 2, "b": 3}}]
    assert t.reasoning_content == "use the tool"
    m = read_turn({"role": "assistant", "content": "", "tool_calls": [
        {"id": "x", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]}, TOOLS)
    assert m.format_errors == [] and m.tool_calls == [{"name": "add", "arguments": {"a": 1, "b": 2}}]
    bad = read_turn({"role": "assistant", "tool_calls": [{"name": "add", "arguments": {"a": "two", "b": 3}}]}, TOOLS)
    assert bad.format_errors and "a" in bad.format_errors[0]
    assert read_turn({"role": "assistant", "tool_calls": [{"name": "add", "invalid_arguments": "{a:"}]},
                     TOOLS).format_errors
    with pytest.raises(EnvError, match="role"):
        read_turn({"role": "user", "content": "hi"}, TOOLS)


def test_episode_good_trajectory_rewarded():
    env = Adder(max_turns=4)
    prompt = env.reset({"a": 2, "b": 3})
    assert prompt.tools == TOOLS and prompt.messages[0]["role"] == "user"
    obs, reward, done, info = env.step(CALL_TEXT)
    assert not done and reward is None
    assert obs[0]["role"] == "tool" and json.loads(obs[0]["content"]) == {"sum": 5}
    assert obs[0]["tool_call_id"] == env.messages[-2]["tool_calls"][0]["id"]
    obs, reward, done, info = env.step("<think>done</think>5")
    assert done and obs is None and reward == 1.0 and info["end"] == "done" and info["turns"] == 2
    with pytest.raises(EnvError, match="over"):
        env.step("again")


@pytest.mark.parametrize("bad", [
    "<tool_call>add\n<arg_key>a</arg_key>\n<arg_value>2</arg_value>\n",  # cut off inside the call
    "<tool_call>multiply\n<arg_key>a</arg_key>\n<arg_value>2</arg_value>\n</tool_call>",  # unknown tool
    "<tool_call>add\n<arg_key>a</arg_key>\n<arg_value>2</arg_value>\n</tool_call>",  # missing required b
    "<tool_call>add\n<arg_key>a</arg_key>\nstray<arg_value>2</arg_value>\n</tool_call>",  # broken markup
])
def test_malformed_call_halts_with_zero(bad):
    env = Adder(max_turns=4)
    env.reset({"a": 2, "b": 3})
    obs, reward, done, info = env.step(bad)
    assert done and obs is None and reward == 0.0
    assert info["end"] == "format_error" and info["format_errors"]


def test_max_turns_cuts_off():
    env = Adder(max_turns=2)
    env.reset({"a": 2, "b": 3})
    assert not env.step(CALL_TEXT).done
    obs, reward, done, info = env.step(CALL_TEXT)
    assert done and reward == 0.0 and info["end"] == "max_turns" and env.turns == 2


def test_run_episodes_with_a_backend_policy():
    class FakeBackend:
        """Calls the tool first, then reads the sum back, like a model would over HTTP."""
        name = "fake"

        def __init__(self):
            self.requests = []

        def chat(self, requests, on_result=None):
            self.requests += requests
            out = []
            for r in requests:
                last = r.messages[-1]
                if last["role"] == "tool":
                    s = ChatSample(content=str(json.loads(last["content"])["sum"]))
                else:
                    a, b = [int(x) for x in last["content"].removeprefix("What is ").rstrip("?").split(" + ")]
                    s = ChatSample(tool_calls=[{"name": "add", "arguments": {"a": a, "b": b}}])
                out.append(ChatResult([s]))
            return out

    backend = FakeBackend()
    tasks = [{"a": i, "b": 2 * i} for i in range(5)]
    results = run_episodes([Adder() for _ in tasks], tasks, BackendPolicy(backend), workers=2)
    assert [r.reward for r in results] == [1.0] * 5 and all(r.turns == 2 for r in results)
    assert len(backend.requests) == 10 and backend.requests[0].tools == TOOLS
    # assistant tool calls go over the wire with JSON-string arguments, as the OpenAI API wants
    sent = next(m for m in backend.requests[5].messages if m["role"] == "assistant")
    assert isinstance(sent["tool_calls"][0]["function"]["arguments"], str)
    with pytest.raises(EnvError, match="own environment"):
        env = Adder()
        run_episodes([env, env], tasks[:2], BackendPolicy(backend))


def test_scripted_policy_gets_a_fresh_agent_per_episode():
    made = []

    class Agent:
        def __init__(self, task):
            made.append(task)

        def act(self, messages, tools):
            return str(messages[0]["content"].count("+"))  # a wrong answer ("1")

    tasks = [{"a": 1, "b": 1}, {"a": 0, "b": 1}]
    results = run_episodes([Adder(), Adder()], tasks, ScriptedPolicy(Agent))
    assert made == tasks and [r.reward for r in results] == [0.0, 1.0]


def test_single_turn_env_scores_with_the_reward_registry():
    record = {"reward_kind": "function_call", "messages": [{"role": "user", "content": "2 + 3?"}],
              "tools": TOOLS, "calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]}
    env = SingleTurnEnv()
    env.reset(record)
    assert env.step(CALL_TEXT).reward == 1.0
    env.reset(record)  # the same turn as an API message is rendered to text and scored alike
    assert env.step({"role": "assistant", "content": "", "tool_calls": [
        {"name": "add", "arguments": {"a": 2, "b": 3}}]}).reward == 1.0
    env.reset(record)
    assert env.step({"role": "assistant", "tool_calls": [{"name": "add", "arguments": {"a": 3, "b": 2}}]}).reward == 0
    with pytest.raises(EnvError, match="reward_kind"):
        env.reset({"messages": []})


def test_message_text_and_answer_text():
    prefix = [{"role": "user", "content": "hi"}]
    text = message_text(prefix, {"role": "assistant", "content": "hello", "reasoning_content": "greet"})
    assert "<think>greet</think>" in text and text.rstrip().endswith("hello")
    assert answer_text("<think>x</think>\nfinal") == "final"
    assert answer_text({"role": "assistant", "content": "c"}) == "c"


def test_registry():
    assert {"search", "coding", "function_calling", "single_turn"} <= set(registered_envs())
    with pytest.raises(EnvError, match="unknown environment"):
        make_env("nope")
    with pytest.raises(EnvError, match="bad configuration"):
        make_env("coding", colour="blue")
    with pytest.raises(EnvError, match="max_turns"):
        Adder(max_turns=0)
