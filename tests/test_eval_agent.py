"""Multi-turn agent tasks: episodes with a scripted or simulated user, and the completion check."""

from __future__ import annotations

import json

import pytest

from glm45.eval.agent import STOP, USER_PROMPT, make_environment, register_environment
from glm45.eval.backend import ChatResult, ChatSample, EvalError
from glm45.eval.kinds import RunContext, Sampling
from glm45.eval.tasks import make_task


class Orders:
    """A tiny stateful shop: look up and cancel orders."""

    def __init__(self, config: dict):
        self.orders = {str(k): dict(v) for k, v in config.get("orders", {}).items()}

    def tools(self):
        def tool(name, **props):
            return {"type": "function", "function": {"name": name, "parameters": {
                "type": "object", "properties": {k: {"type": v} for k, v in props.items()},
                "required": list(props)}}}
        return [tool("get_order", order_id="string"), tool("cancel_order", order_id="string", reason="string")]

    def call(self, name, arguments):
        order = self.orders.get(str(arguments.get("order_id")))
        if order is None:
            return "Error: no such order"
        if name == "get_order":
            return json.dumps(order)
        if name == "cancel_order":
            order["status"] = "cancelled"
            order["reason"] = arguments["reason"]
            return "ok"
        return f"Error: unknown tool {name}"

    def state(self):
        return self.orders


class Clock:
    """A stateless tool."""

    def tools(self):
        return [{"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}]

    def call(self, name, arguments):
        return "12:00"

    def state(self):
        return None


register_environment("test_orders", Orders, replace=True)
register_environment("test_clock", lambda config: Clock(), replace=True)

ORDERS = {"orders": {"7": {"item": "lamp", "status": "pending"}, "8": {"item": "desk", "status": "pending"}}}


class ShopAgent:
    """A deterministic 'model': cancels the order number the user mentions (or `wrong_order`)."""

    name = "fake-agent"

    def __init__(self, wrong_order: str | None = None, chatty: bool = False):
        self.wrong_order = wrong_order
        self.chatty = chatty
        self.requests = []

    def _answer(self, request) -> ChatSample:
        last = request.messages[-1]
        if last["role"] == "user":
            if self.chatty:
                return ChatSample(content="Could you tell me more?")
            order = self.wrong_order or "".join(ch for ch in last["content"] if ch.isdigit())
            return ChatSample(tool_calls=[{"name": "cancel_order",
                                           "arguments": {"order_id": order, "reason": "no longer needed"}}])
        if last["role"] == "tool":
            return ChatSample(content=f"Done: your order is cancelled ({last['content']}).")
        raise AssertionError(f"unexpected turn {last}")

    def chat(self, requests, on_result=None):
        self.requests += list(requests)
        results = [ChatResult([self._answer(r) for _ in range(r.n)]) for r in requests]
        for i, r in enumerate(results):
            if on_result:
                on_result(i, r)
        return results


class ScriptedUserModel:
    """A 'user model' that asks for order 7 and then stops."""

    name = "fake-user"

    def __init__(self):
        self.requests = []

    def chat(self, requests, on_result=None):
        self.requests += list(requests)
        out = []
        for r in requests:
            heard = [m["content"] for m in r.messages if m["role"] == "user"]
            text = STOP if any("cancelled" in h for h in heard) else "Hi, please cancel my order 7."
            out.append(ChatResult([ChatSample(content=text)]))
        return out


def task(records):
    return make_task("shop", "agent", enumerate(records, 1), "<test>")


def run(records, agent, k=1, user=None):
    ctx = RunContext(backend=agent, sampling=Sampling(k=k), user_backend=user, show_progress=False)
    t = task(records)
    return t.kind.evaluate(t, ctx)


EXPECTED = {"actions": [{"name": "cancel_order", "arguments": {"order_id": "7", "reason": "no longer needed"}}],
            "outputs": ["cancelled"]}


def test_scripted_user_episode_passes_state_check():
    record = {"id": "a", "env": "test_orders", "env_config": ORDERS, "user_script": ["Cancel order 7 please."],
              "system": "You are a shop assistant.", "expected": EXPECTED}
    agent = ShopAgent()
    [item] = run([record], agent, k=2)
    assert item.score == 1.0 and len(item.samples) == 2
    sample = item.samples[0]
    assert sample["details"]["end"] == "user_stop" and sample["details"]["failures"] == []
    roles = [m["role"] for m in sample["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    first = agent.requests[0]
    assert first.tools and {t["function"]["name"] for t in first.tools} == {"get_order", "cancel_order"}
    after_tool = next(r for r in agent.requests if r.messages[-1]["role"] == "tool")
    assert after_tool.messages[2]["tool_calls"][0]["function"]["arguments"] == \
        json.dumps({"order_id": "7", "reason": "no longer needed"})
    assert after_tool.messages[3]["tool_call_id"] == after_tool.messages[2]["tool_calls"][0]["id"]


def test_wrong_action_fails_the_state_check():
    record = {"id": "a", "env": "test_orders", "env_config": ORDERS, "user_script": ["Cancel order 7 please."],
              "expected": EXPECTED}
    [item] = run([record], ShopAgent(wrong_order="8"))
    assert item.score == 0.0
    assert "final state differs" in item.samples[0]["details"]["failures"][0]


def test_missing_output_fails():
    record = {"id": "a", "env": "test_orders", "env_config": ORDERS, "user_script": ["Cancel order 7 please."],
              "expected": {**EXPECTED, "outputs": ["refund of $1,000"]}}
    [item] = run([record], ShopAgent())
    assert item.score == 0.0 and "never told the user" in item.samples[0]["details"]["failures"][0]


def test_literal_expected_state():
    final = {"7": {"item": "lamp", "status": "cancelled", "reason": "no longer needed"},
             "8": {"item": "desk", "status": "pending"}}
    base = {"id": "a", "env": "test_orders", "env_config": ORDERS, "user_script": ["Cancel order 7."]}
    assert run([{**base, "expected": {"state": final}}], ShopAgent())[0].score == 1.0
    assert run([{**base, "expected": {"state": ORDERS["orders"]}}], ShopAgent())[0].score == 0.0


def test_simulated_user_with_the_paper_prompt():
    record = {"id": "b", "env": "test_orders", "env_config": ORDERS,
              "instruction": "You want order 7 cancelled because you no longer need it.", "expected": EXPECTED}
    user = ScriptedUserModel()
    [item] = run([record], ShopAgent(), user=user)
    assert item.score == 1.0
    first = user.requests[0]
    assert first.messages[0]["content"] == USER_PROMPT.format(instruction=record["instruction"])
    assert first.messages[1] == {"role": "user", "content": "Hi! How can I help you today?"}
    assert not first.enable_thinking and first.temperature == 0.0
    last = user.requests[-1]  # roles flipped: the agent's words reach the user model as "user"
    assert [m["role"] for m in last.messages] == ["system", "user", "assistant", "user"]
    assert "cancelled" in last.messages[-1]["content"]


def test_stateless_environment_matches_actions():
    class ClockAgent(ShopAgent):
        def _answer(self, request):
            if request.messages[-1]["role"] == "user":
                return ChatSample(tool_calls=[{"name": "now", "arguments": {}}])
            return ChatSample(content="It is 12:00.")

    record = {"id": "c", "env": "test_clock", "user_script": ["What time is it?"],
              "expected": {"actions": [{"name": "now", "arguments": {}}], "outputs": ["12:00"]}}
    assert run([record], ClockAgent())[0].score == 1.0
    record["expected"]["actions"].append({"name": "now", "arguments": {"tz": "UTC"}})
    item = run([record], ClockAgent())[0]
    assert item.score == 0.0 and "expected action not taken" in item.samples[0]["details"]["failures"][0]


def test_max_turns_ends_an_endless_episode():
    record = {"id": "d", "env": "test_orders", "env_config": ORDERS, "max_turns": 3,
              "user_script": ["hi", "order 7", "please", "hello?", "anyone?"], "expected": EXPECTED}
    [item] = run([record], ShopAgent(chatty=True))
    details = item.samples[0]["details"]
    assert details["end"] == "max_turns" and details["turns"] == 3 and item.score == 0.0


def test_validation_errors():
    with pytest.raises(EvalError, match="unknown agent environment"):
        task([{"env": "nope", "instruction": "x"}])
    with pytest.raises(EvalError, match="instruction"):
        task([{"env": "test_orders"}])
    with pytest.raises(EvalError, match="already registered"):
        register_environment("test_orders", Orders)
    assert make_environment("test_orders", ORDERS).state()["7"]["status"] == "pending"
