"""The server end to end: a real uvicorn server on a free local port, the real engine, and the
real `openai` client. Scripted tiny models (see conftest_serve.py) make the output exact, so
reasoning, content, tool calls and usage can be checked token for token."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from conftest_serve import (
    CONTENT,
    MODEL_NAME,
    REASONING,
    TOOL,
    content_chain,
    make_backend,
    scripted_model,
    start_server,
    tokenizer,
    tool_chain,
)

from glm45.chat import render
from glm45.serve.protocol import ChatCompletionChunk, Completion

USER = [{"role": "user", "content": "What is the weather in Oslo?"}]
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def content_server():
    server = start_server(make_backend(scripted_model(content_chain())))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tool_backend():
    return make_backend(scripted_model(tool_chain()), speculative=True)  # MTP: two tokens per step


@pytest.fixture(scope="module")
def tool_server(tool_backend):
    server = start_server(tool_backend)
    yield server
    server.stop()


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def n_tokens(text: str) -> int:
    return len(tokenizer().encode(text))


def sse_events(server, path: str, body: dict) -> list:
    """Raw SSE events (parsed JSON, or the string "[DONE]") of a streamed request."""
    events = []
    with httpx.stream("POST", server.base_url + path, json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
            else:
                assert line == "", line
    return events


# ------------------------------------------------------------------ plain chat
def test_chat_with_thinking(content_server):
    r = client(content_server).chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=50)
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content == CONTENT and choice.message.tool_calls is None
    extra = choice.message.model_extra
    assert extra["reasoning_content"] == extra["reasoning"] == REASONING
    generated = n_tokens("<think>" + REASONING + "</think>" + CONTENT)
    assert r.usage.prompt_tokens == n_tokens(render(USER, add_generation_prompt=True))
    assert r.usage.completion_tokens == generated + 1  # the EOS token that ended it counts (as in vLLM)
    assert r.usage.completion_tokens_details.reasoning_tokens == n_tokens("<think>" + REASONING + "</think>")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.id.startswith("chatcmpl-") and r.model == MODEL_NAME and r.object == "chat.completion"


def test_chat_thinking_off_per_request(content_server):
    r = client(content_server).chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=50,
                                                       extra_body=NO_THINK)
    msg = r.choices[0].message
    assert msg.content == CONTENT and msg.model_extra.get("reasoning_content") is None
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    assert r.usage.prompt_tokens == n_tokens(render(USER, enable_thinking=False, add_generation_prompt=True))


def test_server_default_thinking_off():
    server = start_server(make_backend(scripted_model(content_chain())), default_thinking=False)
    try:
        c = client(server)
        off = c.chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=50)
        assert off.choices[0].message.content == CONTENT
        assert off.choices[0].message.model_extra.get("reasoning_content") is None
        on = c.chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=50,
                                       extra_body={"chat_template_kwargs": {"enable_thinking": True}})
        assert on.choices[0].message.model_extra["reasoning_content"] == REASONING
    finally:
        server.stop()


def test_chat_stream(content_server):
    stream = client(content_server).chat.completions.create(
        model=MODEL_NAME, messages=USER, max_tokens=50, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.model_extra.get("reasoning_content") or "" for d in deltas) == REASONING
    assert "".join(d.content or "" for d in deltas) == CONTENT
    # reasoning strictly before content
    kinds = ["r" if d.model_extra.get("reasoning_content") else "c" for d in deltas if d.content or
             d.model_extra.get("reasoning_content")]
    assert kinds == sorted(kinds, key=lambda k: k != "r")
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == n_tokens(
        "<think>" + REASONING + "</think>" + CONTENT) + 1
    assert all(c.usage is None for c in chunks[:-1])


def test_raw_sse_format(content_server):
    events = sse_events(content_server, "/v1/chat/completions",
                        {"model": MODEL_NAME, "messages": USER, "max_tokens": 50, "stream": True})
    assert events[-1] == "[DONE]"
    for e in events[:-1]:
        ChatCompletionChunk.model_validate(e)
        assert "usage" not in e  # only with stream_options.include_usage
    assert len({e["id"] for e in events[:-1]}) == 1


def test_n_stop_and_length(content_server):
    c = client(content_server)
    r = c.chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=50, n=3, extra_body=NO_THINK)
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    assert all(ch.message.content == CONTENT for ch in r.choices)
    assert r.usage.completion_tokens == 3 * (n_tokens(CONTENT) + 1)
    r = c.chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=50, stop=["blue"], extra_body=NO_THINK)
    assert r.choices[0].message.content == CONTENT.split("blue")[0].strip() and r.choices[0].finish_reason == "stop"
    r = c.chat.completions.create(model=MODEL_NAME, messages=USER, max_completion_tokens=2, extra_body=NO_THINK)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2
    assert CONTENT.startswith(r.choices[0].message.content)


def test_stream_n_choices_interleave(content_server):
    stream = client(content_server).chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=50, n=2,
                                                            stream=True, extra_body=NO_THINK)
    text = {0: "", 1: ""}
    reasons = {}
    for chunk in stream:
        ch = chunk.choices[0]
        text[ch.index] += ch.delta.content or ""
        if ch.finish_reason:
            reasons[ch.index] = ch.finish_reason
    assert text == {0: CONTENT, 1: CONTENT} and reasons == {0: "stop", 1: "stop"}


def test_logprobs(content_server):
    r = client(content_server).chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=50, logprobs=True,
                                                       top_logprobs=2, extra_body=NO_THINK)
    entries = r.choices[0].logprobs.content
    assert len(entries) == r.usage.completion_tokens
    assert "".join(e.token for e in entries[:-1]) == CONTENT  # the last one is the EOS token
    for e in entries:
        assert -1e-3 < e.logprob <= 0  # the scripted model is sure of every token
        assert len(e.top_logprobs) == 2 and e.top_logprobs[0].token == e.token
        assert bytes(e.bytes).decode() == e.token


def test_seeded_sampling_is_reproducible():
    server = start_server(make_backend())  # the random checkpoint, loaded from its directory
    try:
        c = client(server)
        kw = dict(model=MODEL_NAME, messages=USER, max_tokens=12, temperature=1.0, seed=1234, extra_body=NO_THINK)
        a, b = c.chat.completions.create(**kw), c.chat.completions.create(**kw)
        assert a.choices[0].message.content == b.choices[0].message.content
        assert a.usage.completion_tokens == b.usage.completion_tokens > 0
    finally:
        server.stop()


# ------------------------------------------------------------------ tools
def test_tool_call(tool_server):
    r = client(tool_server).chat.completions.create(model=MODEL_NAME, messages=USER, tools=[TOOL], max_tokens=60)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "find" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    assert choice.message.content is None
    assert choice.message.model_extra["reasoning_content"] == REASONING


def test_tool_call_stream(tool_server, tool_backend):
    stream = client(tool_server).chat.completions.create(model=MODEL_NAME, messages=USER, tools=[TOOL], max_tokens=60,
                                                         stream=True)
    frags = [tc for chunk in stream for tc in (chunk.choices[0].delta.tool_calls or [])
             if chunk.choices]
    first, rest = frags[0], frags[1:]
    assert first.index == 0 and first.id.startswith("call_") and first.type == "function"
    assert first.function.name == "find"
    assert rest and all(f.id is None and f.function.name is None and f.index == 0 for f in rest)
    assert json.loads("".join(f.function.arguments for f in frags)) == {"city": "Oslo"}
    assert len(rest) >= 2  # arguments stream as they arrive, not in one piece at </tool_call>
    assert tool_backend.engine.stats()["acceptance_rate"] > 0.9  # tokens arrived two per step


def test_tool_round_trip(tool_server):
    c = client(tool_server)
    first = c.chat.completions.create(model=MODEL_NAME, messages=USER, tools=[TOOL], max_tokens=60)
    call = first.choices[0].message.tool_calls[0]
    history = [*USER,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": call.id, "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
               {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}]
    second = c.chat.completions.create(model=MODEL_NAME, messages=history, tools=[TOOL], max_tokens=60)
    assert second.choices[0].finish_reason == "tool_calls"  # the scripted model always calls
    as_dicts = [*USER, {"role": "assistant", "content": "",
                        "tool_calls": [{"function": {"name": "find", "arguments": {"city": "Oslo"}}}]},
                history[2]]
    prompt = render(as_dicts, [TOOL], add_generation_prompt=True)
    assert "<arg_value>Oslo</arg_value>" in prompt and "<tool_response>\nSunny, 21 C\n</tool_response>" in prompt
    assert second.usage.prompt_tokens == n_tokens(prompt)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "find"}}])
def test_tool_choice_forces_a_call(tool_server, choice):
    r = client(tool_server).chat.completions.create(model=MODEL_NAME, messages=USER, tools=[TOOL], max_tokens=60,
                                                    tool_choice=choice)
    [call] = r.choices[0].message.tool_calls
    assert call.function.name == "find" and json.loads(call.function.arguments) == {"city": "Oslo"}
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.choices[0].message.model_extra.get("reasoning_content") is None  # forced calls skip thinking


def test_tool_choice_named_streams_the_name_first(tool_server):
    stream = client(tool_server).chat.completions.create(
        model=MODEL_NAME, messages=USER, tools=[TOOL], max_tokens=60, stream=True,
        tool_choice={"type": "function", "function": {"name": "find"}})
    frags = [tc for chunk in stream if chunk.choices for tc in (chunk.choices[0].delta.tool_calls or [])]
    assert frags[0].function.name == "find"
    assert json.loads("".join(f.function.arguments for f in frags)) == {"city": "Oslo"}


def test_tool_choice_none_drops_calls(tool_server):
    r = client(tool_server).chat.completions.create(model=MODEL_NAME, messages=USER, tools=[TOOL], max_tokens=60,
                                                    tool_choice="none")
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == n_tokens(render(USER, None, add_generation_prompt=True))  # tools not offered


def test_thinking_off_tool_call(tool_server):
    r = client(tool_server).chat.completions.create(model=MODEL_NAME, messages=USER, tools=[TOOL], max_tokens=60,
                                                    extra_body=NO_THINK)
    assert r.choices[0].message.model_extra.get("reasoning_content") is None
    assert json.loads(r.choices[0].message.tool_calls[0].function.arguments) == {"city": "Oslo"}


# ------------------------------------------------------------------ completions, models, health, metrics
def test_completions(content_server):
    c = client(content_server)
    prompt = "<|assistant|>"  # the scripted chain starts here
    r = c.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=50)
    assert r.choices[0].text == "<think>" + REASONING + "</think>" + CONTENT
    assert r.choices[0].finish_reason == "stop" and r.usage.prompt_tokens == 1
    r = c.completions.create(model=MODEL_NAME, prompt=[prompt, "</think>"], max_tokens=50, n=2, echo=True)
    assert [ch.index for ch in r.choices] == [0, 1, 2, 3]
    assert r.choices[3].text == "</think>" + CONTENT
    r = c.completions.create(model=MODEL_NAME, prompt=[tokenizer().special_ids["</think>"]], max_tokens=3, logprobs=1)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and len(lp.token_logprobs) == 3
    assert r.choices[0].finish_reason == "length"
    assert lp.text_offset == [0, len(lp.tokens[0]), len(lp.tokens[0]) + len(lp.tokens[1])]


def test_completions_stream(content_server):
    events = sse_events(content_server, "/v1/completions",
                        {"model": MODEL_NAME, "prompt": "</think>", "max_tokens": 50, "stream": True,
                         "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    body = [e for e in events[:-1] if e["choices"]]
    assert "".join(e["choices"][0]["text"] for e in body) == CONTENT
    assert body[-1]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["usage"]["completion_tokens"] == n_tokens(CONTENT) + 1
    for e in body:
        Completion.model_validate({**e, "object": "text_completion"})


def test_models_health_metrics(content_server):
    c = client(content_server)
    [m] = c.models.list().data
    assert m.id == MODEL_NAME and m.object == "model" and m.model_extra["max_model_len"] == 1024
    assert httpx.get(content_server.base_url + "/health").json() == {"status": "ok"}
    c.chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=50)
    text = httpx.get(content_server.base_url + "/metrics").text
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(lines['glm45_requests_total{endpoint="/v1/chat/completions",status="200"}']) >= 1
    assert float(lines["glm45_generation_tokens_total"]) >= n_tokens(CONTENT)
    assert float(lines['glm45_request_latency_seconds_count{endpoint="chat"}']) >= 1
    assert float(lines['glm45_time_to_first_token_seconds_count{endpoint="chat"}']) >= 1
    assert lines["glm45_queue_depth"] == "0" and lines["glm45_running_batch_size"] == "0"
    assert float(lines['glm45_request_finish_total{reason="stop"}']) >= 1
