"""Server layers without HTTP: request validation and its error messages, prompt planning
(tool_choice, thinking), the streaming conversion over the real chat StreamParser, metrics,
and stream merging."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from pydantic import ValidationError

from glm45.chat import parse, render
from glm45.serve.chat_output import ChoiceAssembler
from glm45.serve.errors import from_validation_error
from glm45.serve.metrics import ServerMetrics
from glm45.serve.prompting import ChatPlan, plan_chat
from glm45.serve.protocol import ChatCompletionChunk, ChatCompletionRequest, CompletionRequest
from glm45.serve.sse import merge

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}, "days": {"type": "integer"}},
                                               "required": ["city"]}}}]
USER = [{"role": "user", "content": "Weather in Paris?"}]


def error_of(body: dict, model=ChatCompletionRequest) -> dict:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return from_validation_error(info.value).body()["error"]


def chat(**fields) -> dict:
    return {"model": "m", "messages": USER, **fields}


@pytest.mark.parametrize("body, param, words", [
    ({"model": "m"}, "messages", "Field required"),
    ({"messages": USER}, "model", "Field required"),
    (chat(messages=[]), "messages", "at least 1"),
    (chat(messages=[{"role": "robot", "content": "x"}]), "messages[0].role", "robot"),
    (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content", "valid string"),
    (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
     "messages[0].content[0].type", "only 'text'"),
    (chat(messages=[*USER, {"role": "assistant", "content": None}]), "messages[1].content", "content or tool_calls"),
    (chat(messages=[*USER, {"role": "tool", "content": "x"}]), "messages[1].tool_call_id", "Field required"),
    (chat(messages=[*USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1"}}]}]),
     "messages[1].tool_calls[0].function.arguments", "not valid JSON"),
    (chat(messages=[*USER, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}]}]),
     "messages[1].tool_calls[0].function.arguments", "JSON object"),
    (chat(max_tokens=0), "max_tokens", "greater than or equal to 1"),
    (chat(max_tokens=-5), "max_tokens", "greater than or equal to 1"),
    (chat(max_completion_tokens=0), "max_completion_tokens", "greater than or equal to 1"),
    (chat(max_tokens="12"), "max_tokens", "valid integer"),
    (chat(max_tokens=1.5), "max_tokens", "valid integer"),
    (chat(temperature=3), "temperature", "less than or equal to 2"),
    (chat(temperature="hot"), "temperature", "valid number"),
    (chat(n=0), "n", "greater than or equal to 1"),
    (chat(stream="yes"), "stream", "valid boolean"),
    (chat(stop=["a"] * 17), "stop", "at most 16"),
    (chat(top_logprobs=3), "top_logprobs", "requires logprobs"),
    (chat(stream_options={"include_usage": True}), "stream_options", "only allowed when stream"),
    (chat(tools=[{"type": "function", "function": {"name": "bad name"}}]), "tools[0].function.name", "1-64"),
    (chat(tools=[{"type": "retrieval"}]), "tools[0].type", "function"),
    (chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]),
     "tools[0].function.parameters", "must be 'object'"),
    (chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "strng"}}}}}]),
     "tools[0].function.parameters", "properties.a.type 'strng'"),
    (chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}}}]),
     "tools[0].function.parameters", "required names ['b']"),
    (chat(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
     "tools[0].function.parameters", "valid dictionary"),
    (chat(tools=TOOLS * 2), "tools", "unique"),
    (chat(tool_choice="required"), "tool_choice", "no tools"),
    (chat(tools=TOOLS, tool_choice="sometimes"), "tool_choice", "'none', 'auto' or 'required'"),
    (chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "other"}}), "tool_choice",
     "not among the tools"),
    (chat(chat_template_kwargs={"enable_thinking": "no"}), "chat_template_kwargs.enable_thinking", "boolean"),
])
def test_chat_request_errors_name_the_field(body, param, words):
    err = error_of(body)
    assert err["param"] == param, err
    assert words in err["message"], err
    assert err["type"] == "invalid_request_error" and err["code"]


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "prompt": []}, "prompt"),
    ({"model": "m", "prompt": [[1], []]}, "prompt"),
    ({"model": "m", "prompt": [-1]}, "prompt"),
    ({"model": "m", "prompt": {"text": "x"}}, "prompt"),
    ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "prompt": "x", "logprobs": 9}, "logprobs"),
    ({"model": "m", "prompt": "x", "suffix": "y"}, "suffix"),
])
def test_completion_request_errors(body, param):
    assert error_of(body, CompletionRequest)["param"] == param


def test_valid_requests_parse():
    req = ChatCompletionRequest.model_validate(chat(
        messages=[{"role": "developer",
                    "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief"}]},
                  *USER,
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "c1", "type": "function",
                       "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "sunny"}],
        tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}, stop="END",
        max_completion_tokens=7, temperature=0, unknown_field={"ignored": True}))
    assert req.messages[2].tool_calls[0].function.arguments == {"city": "Paris"}
    assert req.stop == ["END"] and req.completion_limit == 7
    for prompt in ("hi", ["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        assert CompletionRequest.model_validate({"model": "m", "prompt": prompt}).max_tokens == 16


# ------------------------------------------------------------------ prompt planning
def plan(default_thinking=True, **fields) -> ChatPlan:
    body = chat(**fields)
    req = ChatCompletionRequest.model_validate(body)
    return plan_chat(req, body["messages"], body.get("tools"), default_thinking)


def test_plan_auto_offers_tools_as_sent():
    p = plan(tools=TOOLS)
    assert p.prompt == render(USER, TOOLS, add_generation_prompt=True)
    assert json.dumps(TOOLS[0], ensure_ascii=False) in p.prompt and p.keep_tool_calls and p.prefill == ""


def test_plan_none_hides_tools():
    p = plan(tools=TOOLS, tool_choice="none")
    assert "<tools>" not in p.prompt and not p.keep_tool_calls
    assert p.prompt == render(USER, None, add_generation_prompt=True)


def test_plan_required_and_named_prefill_the_call():
    p = plan(tools=TOOLS, tool_choice="required")
    assert p.prompt == render(USER, TOOLS, enable_thinking=False, add_generation_prompt=True) + "\n<tool_call>"
    assert p.prefill == "\n<tool_call>" and not p.enable_thinking
    p = plan(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert p.prompt.endswith("<|assistant|>\n<think></think>\n<tool_call>get_weather\n")


def test_plan_thinking_switch_and_server_default():
    assert plan().prompt.endswith("<|assistant|>") and plan().enable_thinking
    off = plan(chat_template_kwargs={"enable_thinking": False})
    assert off.prompt.endswith("Paris?/nothink<|assistant|>\n<think></think>") and not off.enable_thinking
    assert not plan(default_thinking=False).enable_thinking
    assert plan(default_thinking=False, chat_template_kwargs={"enable_thinking": True}).enable_thinking


def test_plan_round_trip_renders_string_arguments_like_dicts():
    history = [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 2}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    p = plan(messages=[{"role": "developer", "content": "Be brief."}, *history], tools=TOOLS)
    as_dicts = [{"role": "system", "content": "Be brief."}, *history[:1],
                {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]}, history[2]]
    assert p.prompt == render(as_dicts, TOOLS, add_generation_prompt=True)
    assert "<arg_value>Paris</arg_value>\n<arg_key>days</arg_key>\n<arg_value>2</arg_value>" in p.prompt
    assert "None" not in p.prompt.split("</tools>")[1]


# ------------------------------------------------------------------ streaming conversion
OUTPUT = ("\n<think>Checking the <b>forecast</b>.</think>\nLet me look.\n<tool_call>get_weather\n"
          "<arg_key>city</arg_key>\n<arg_value>São \"Paulo\"\n</arg_value>\n<arg_key>days</arg_key>\n"
          "<arg_value>3</arg_value>\n</tool_call>\n<tool_call>get_weather\n</tool_call>")


def random_split(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, min(40, len(text) - 1))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def run_assembler(chunks: list[str], p: ChatPlan, reason: str = "stop"):
    a = ChoiceAssembler(0, p)
    deltas = [d for c in chunks for d in a.feed(c)] + a.finish(reason)
    return a, deltas


def joined(deltas: list[dict], key: str) -> str:
    return "".join(d[key] for d in deltas if key in d)


def test_stream_conversion_matches_whole_parse_for_any_split():
    p = ChatPlan(prompt="", prefill="", enable_thinking=True, tools=TOOLS, keep_tool_calls=True)
    expected = parse(OUTPUT, TOOLS)
    rng = random.Random(0)
    for trial in range(60):
        chunks = [OUTPUT] if trial == 0 else list(OUTPUT) if trial == 1 else random_split(OUTPUT, rng)
        a, deltas = run_assembler(chunks, p)
        assert joined(deltas, "reasoning_content") == joined(deltas, "reasoning") == expected["reasoning_content"]
        assert joined(deltas, "content") == expected["content"] == "Let me look."
        calls: dict[int, dict] = {}
        for d in deltas:
            for frag in d.get("tool_calls", []):
                if "id" in frag:  # the first fragment: id, type and name
                    assert frag["index"] not in calls and frag["type"] == "function" and frag["function"]["name"]
                    calls[frag["index"]] = {"id": frag["id"], "name": frag["function"]["name"], "args": ""}
                calls[frag["index"]]["args"] += frag["function"]["arguments"]
        assert [json.loads(c["args"]) for c in calls.values()] == [
            {"city": "São \"Paulo\"\n", "days": 3}, {}]  # the zero-argument call is kept
        msg = a.message()
        assert [tc["id"] for tc in msg["tool_calls"]] == [c["id"] for c in calls.values()]
        assert [json.loads(tc["function"]["arguments"]) for tc in msg["tool_calls"]] == \
            [c["arguments"] for c in expected["tool_calls"]]
        assert a.finish_reason == "tool_calls"
        for d in deltas:  # every delta is a valid chunk delta
            ChatCompletionChunk.model_validate({"id": "x", "created": 0, "model": "m",
                                                "choices": [{"index": 0, "delta": d}]})


def test_stream_conversion_with_thinking_off_never_routes_answer_to_reasoning():
    p = ChatPlan(prompt="", prefill="", enable_thinking=False, tools=None, keep_tool_calls=False)
    a, deltas = run_assembler(["\nThe answer", " is 4."], p)
    assert joined(deltas, "content") == "The answer is 4." and not joined(deltas, "reasoning_content")
    assert a.message()["reasoning_content"] is None and a.finish_reason == "stop"
    assert a.reasoning_tokens([5, 6, 7], think_close_id=14) == 0


def test_prefilled_call_is_reported_with_its_name():
    p = ChatPlan(prompt="", prefill="\n<tool_call>get_weather\n", enable_thinking=False, tools=TOOLS,
                 keep_tool_calls=True)
    a, deltas = run_assembler(["<arg_key>city</arg_key>\n<arg_value>Rome", "</arg_value>\n</tool_call>"], p)
    assert deltas[0]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert json.loads(a.message()["tool_calls"][0]["function"]["arguments"]) == {"city": "Rome"}
    assert a.message()["content"] is None and a.finish_reason == "tool_calls"


def test_dropped_calls_and_length():
    p = ChatPlan(prompt="", prefill="", enable_thinking=True, tools=None, keep_tool_calls=False)
    a, deltas = run_assembler([OUTPUT], p)
    assert not any("tool_calls" in d for d in deltas) and a.message()["tool_calls"] is None
    assert a.finish_reason == "stop"
    keep = ChatPlan(prompt="", prefill="", enable_thinking=True, tools=TOOLS, keep_tool_calls=True)
    a, _ = run_assembler([OUTPUT[:-20]], keep, reason="length")
    assert a.finish_reason == "length"


def test_reasoning_token_count():
    p = ChatPlan(prompt="", prefill="", enable_thinking=True, tools=None, keep_tool_calls=False)
    a, _ = run_assembler(["\n<think>ab", "</think>cd"], p)
    assert a.reasoning_tokens([1, 13, 50, 51, 14, 60, 61], think_close_id=14) == 5
    a, _ = run_assembler(["\n<think>never closed"], p)
    assert a.reasoning_tokens([1, 13, 50], think_close_id=14) == 3
    a, _ = run_assembler(["no think </think>"], p)
    assert a.reasoning_tokens([70, 14], think_close_id=14) == 0


# ------------------------------------------------------------------ metrics, merging
def test_metrics_render_prometheus_text():
    m = ServerMetrics(queue_depth=lambda: 3, running=lambda: 2)
    m.requests.inc(endpoint="/v1/chat/completions", status="200")
    m.latency.observe(0.3, endpoint="chat")
    m.latency.observe(7.0, endpoint="chat")
    text = m.render()
    assert 'glm45_requests_total{endpoint="/v1/chat/completions",status="200"} 1' in text
    assert 'glm45_request_latency_seconds_bucket{endpoint="chat",le="0.5"} 1' in text
    assert 'glm45_request_latency_seconds_bucket{endpoint="chat",le="+Inf"} 2' in text
    assert 'glm45_request_latency_seconds_count{endpoint="chat"} 2' in text
    assert "glm45_queue_depth 3" in text and "glm45_running_batch_size 2" in text
    assert "# TYPE glm45_request_latency_seconds histogram" in text


def test_merge_interleaves_and_cancels_on_close():
    closed = []

    async def gen(name: str, n: int, delay: float):
        try:
            for i in range(n):
                await asyncio.sleep(delay)
                yield f"{name}{i}"
        finally:
            closed.append(name)

    async def main():
        items = [x async for x in merge([gen("a", 3, 0.001), gen("b", 2, 0.0015)])]
        assert sorted(items) == [(0, "a0"), (0, "a1"), (0, "a2"), (1, "b0"), (1, "b1")]
        stream = merge([gen("c", 100, 0.001), gen("d", 100, 0.001)])
        await stream.__anext__()
        await stream.aclose()
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert {"c", "d"} <= set(closed)
