"""Bad input over HTTP: every problem is a 4xx with an OpenAI error body naming it, the API key
is enforced, and nothing a client sends breaks the server for the next request."""

from __future__ import annotations

import httpx
import openai
import pytest
from conftest_serve import CONTENT, MODEL_NAME, TOOL, content_chain, make_backend, scripted_model, start_server

KEY = "sekret-key"
USER = [{"role": "user", "content": "hello"}]
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def server():
    s = start_server(make_backend(scripted_model(content_chain())), api_key=KEY)
    yield s
    s.stop()


def client(server, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=30)


def post(server, path: str, body=None, *, content: bytes | None = None, key: str | None = KEY, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server.base_url + path, json=body, content=content, headers=headers, timeout=30, **kw)


def error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def chat(**fields) -> dict:
    return {"model": MODEL_NAME, "messages": USER, "max_tokens": 5, **fields}


def assert_still_serving(server) -> None:
    r = client(server).chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=50, extra_body=NO_THINK)
    assert r.choices[0].message.content == CONTENT


# ------------------------------------------------------------------ malformed bodies
@pytest.mark.parametrize("content, words", [
    (b"{\"model\": ", "not valid JSON"),
    (b"", "empty"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (b"\"just a string\"", "must be a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON"),
])
def test_malformed_json(server, content, words):
    err = error(post(server, "/v1/chat/completions", content=content), 400)
    assert words in err["message"] and err["code"] == "invalid_json"


def test_missing_and_wrong_typed_fields(server):
    err = error(post(server, "/v1/chat/completions", {"model": MODEL_NAME}), 400)
    assert err["param"] == "messages" and "required" in err["message"]
    err = error(post(server, "/v1/chat/completions", chat(max_tokens="many")), 400)
    assert err["param"] == "max_tokens" and "integer" in err["message"]
    err = error(post(server, "/v1/chat/completions", chat(messages=[{"role": "user"}])), 400)
    assert err["param"] == "messages[0].content"
    err = error(post(server, "/v1/completions", {"model": MODEL_NAME}), 400)
    assert err["param"] == "prompt"


def test_openai_client_sees_bad_request(server):
    c = client(server)
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=0)
    assert info.value.status_code == 400 and info.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=-3)
    assert info.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as info:
        c.completions.create(model=MODEL_NAME, prompt="hi", max_tokens=0)
    assert info.value.body["param"] == "max_tokens"


def test_unknown_model(server):
    with pytest.raises(openai.NotFoundError) as info:
        client(server).chat.completions.create(model="gpt-9", messages=USER, max_tokens=5)
    assert info.value.body["code"] == "model_not_found" and info.value.body["param"] == "model"
    assert "gpt-9" in info.value.body["message"] and MODEL_NAME in info.value.body["message"]
    err = error(post(server, "/v1/completions", {"model": "gpt-9", "prompt": "x"}), 404)
    assert err["code"] == "model_not_found"


@pytest.mark.parametrize("tools, param, words", [
    ([{"type": "function", "function": {"name": "has space"}}], "tools[0].function.name", "1-64"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": []}}}],
     "tools[0].function.parameters", "properties must be an object"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "x": {"type": "integr"}}}}}], "tools[0].function.parameters", "integr"),
    ([{"type": "function"}], "tools[0].function", "required"),
    ([TOOL, TOOL], "tools", "unique"),
])
def test_bad_tool_schemas(server, tools, param, words):
    with pytest.raises(openai.BadRequestError) as info:
        client(server).chat.completions.create(model=MODEL_NAME, messages=USER, tools=tools, max_tokens=5)
    assert info.value.body["param"] == param and words in info.value.body["message"]


def test_bad_tool_choice_and_tool_history(server):
    err = error(post(server, "/v1/chat/completions", chat(tool_choice="required")), 400)
    assert err["param"] == "tool_choice"
    err = error(post(server, "/v1/chat/completions",
                     chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "nope"}})), 400)
    assert err["param"] == "tool_choice" and "nope" in err["message"]
    history = [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "find", "arguments": "{city: Oslo}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]
    with pytest.raises(openai.BadRequestError) as info:
        client(server).chat.completions.create(model=MODEL_NAME, messages=history, tools=[TOOL], max_tokens=5)
    assert info.value.body["param"] == "messages[1].tool_calls[0].function.arguments"
    assert "not valid JSON" in info.value.body["message"]


def test_context_length(server):
    long_text = "word " * 1500  # > 1024 tokens of context
    with pytest.raises(openai.BadRequestError) as info:
        client(server).chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": long_text}],
                                               max_tokens=5)
    body = info.value.body
    assert body["code"] == "context_length_exceeded" and body["param"] == "messages" and "1024" in body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client(server).chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=5000)
    assert info.value.body["code"] == "context_length_exceeded" and info.value.body["param"] == "max_tokens"
    err = error(post(server, "/v1/completions", {"model": MODEL_NAME, "prompt": long_text}), 400)
    assert err["code"] == "context_length_exceeded" and err["param"] == "prompt"
    err = error(post(server, "/v1/completions", {"model": MODEL_NAME, "prompt": [1, 2, 10 ** 6]}), 400)
    assert err["param"] == "prompt" and "vocabulary" in err["message"]


def test_streamed_request_errors_before_streaming(server):
    r = post(server, "/v1/chat/completions", chat(stream=True, max_tokens=0))
    assert error(r, 400)["param"] == "max_tokens" and r.headers["content-type"].startswith("application/json")


# ------------------------------------------------------------------ API key, routes
def test_api_key(server):
    with pytest.raises(openai.AuthenticationError) as info:
        client(server, "wrong-key").chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=5)
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(server, "wrong-key").models.list()
    # the openai client refuses to send no key at all, so a missing key is tested raw
    err = error(post(server, "/v1/completions", {"model": MODEL_NAME, "prompt": "x"}, key=None), 401)
    assert "Missing API key" in err["message"] and err["code"] == "invalid_api_key"
    error(httpx.get(server.base_url + "/v1/models", headers={"Authorization": "Basic abc"}), 401)
    # the key is checked before the body is read: a bad body without a key is still a 401
    error(post(server, "/v1/chat/completions", content=b"{", key="nope"), 401)
    assert httpx.get(server.base_url + "/health").status_code == 200  # health and metrics stay open
    assert httpx.get(server.base_url + "/metrics").status_code == 200
    assert client(server).models.list().data[0].id == MODEL_NAME


def test_unknown_routes_and_methods(server):
    err = error(httpx.get(server.base_url + "/v1/nothing"), 404)
    assert err["code"] == "not_found"
    err = error(httpx.get(server.base_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}), 405)
    assert err["code"] == "method_not_allowed"


def test_errors_do_not_break_the_server(server):
    for content in (b"\x00" * 1000, b"{\"messages\": [{\"role\": \"user\", \"content\": \"" + b"\xc3" * 50 + b"\"}]}",
                    b"{\"model\": \"" + MODEL_NAME.encode() + b"\", \"messages\": 7}"):
        assert post(server, "/v1/chat/completions", content=content).status_code == 400
    big = post(server, "/v1/chat/completions", content=b" " * (33 * 1024 * 1024))
    assert error(big, 413)["code"] == "request_too_large"
    assert_still_serving(server)
    text = httpx.get(server.base_url + "/metrics").text
    assert 'glm45_requests_total{endpoint="/v1/chat/completions",status="400"}' in text
