"""The OpenAI-compatible backend, the response cache, the runner and `glm45 eval`, over real HTTP
against a small fake OpenAI-compatible server (FastAPI + uvicorn on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Callable

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from glm45.cli import main as glm45_main
from glm45.eval.backend import BackendError, ChatRequest
from glm45.eval.kinds import Sampling
from glm45.eval.openai_backend import OpenAIBackend
from glm45.eval.runner import evaluate
from glm45.eval.tasks import make_task, resolve_task

API_KEY = "test-key"


class FakeOpenAI:
    """A real HTTP server speaking /v1/models and /v1/chat/completions; answers with `responder`."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.responder: Callable[[dict], dict] = lambda body: {"content": "hello"}
        self.failures: list[tuple[int, dict]] = []  # (status, headers) answered before any success
        self.delay_s = 0.0
        self._lock = threading.Lock()
        app = FastAPI()

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": "fake-glm", "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            with self._lock:
                self.bodies.append(body)
                self.headers.append(dict(request.headers))
                failure = self.failures.pop(0) if self.failures else None
            if request.headers.get("authorization") != f"Bearer {API_KEY}":
                return JSONResponse({"error": {"message": "bad api key"}}, status_code=401)
            if failure:
                status, headers = failure
                return JSONResponse({"error": {"message": f"injected {status}"}}, status_code=status,
                                    headers=headers)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            message = {"role": "assistant", "content": None, **self.responder(body)}
            finish = "tool_calls" if message.get("tool_calls") else "stop"
            tokens = len(json.dumps(message)) // 4
            return {"id": "x", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1}}

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "fake server did not start"
            time.sleep(0.01)

    def reset(self):
        self.bodies.clear()
        self.headers.clear()
        self.failures.clear()
        self.delay_s = 0.0
        self.responder = lambda body: {"content": "hello"}

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server():
    s = FakeOpenAI()
    yield s
    s.stop()


@pytest.fixture
def fake(server):
    server.reset()
    yield server
    server.reset()


def backend(fake, **kwargs) -> OpenAIBackend:
    kwargs.setdefault("backoff_s", 0.01)
    return OpenAIBackend(fake.url, API_KEY, **kwargs)


def last_user(body: dict) -> str:
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


# ---------------------------------------------------------------- backend


def test_backend_speaks_the_openai_protocol(fake):
    answers = iter([
        {"content": "four", "reasoning_content": "2+2"},
        {"content": "five", "reasoning": "vLLM calls it reasoning"},
        {"content": "<think>\nhmm\n</think>\n\nsix"},
        {"content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "add", "arguments": json.dumps({"a": 1, "b": [2, 3]})}}]},
        {"content": "", "tool_calls": [{"id": "c2", "type": "function", "function": {
            "name": "add", "arguments": "{not json"}}]},
    ])
    fake.responder = lambda body: next(answers)
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    with backend(fake, concurrency=1) as b:
        assert b.model == "fake-glm" and b.name == f"openai:{fake.url}:fake-glm"
        results = b.chat([ChatRequest([{"role": "user", "content": "q"}], n=3, seed=100, enable_thinking=False),
                          ChatRequest([{"role": "user", "content": "t"}], tools=tools, n=2, max_tokens=50)])
    s = [*results[0].samples, *results[1].samples]
    assert (s[0].content, s[0].reasoning_content) == ("four", "2+2")
    assert (s[1].content, s[1].reasoning_content) == ("five", "vLLM calls it reasoning")
    assert (s[2].content, s[2].reasoning_content) == ("six", "hmm")
    assert s[3].tool_calls == [{"name": "add", "arguments": {"a": 1, "b": [2, 3]}}]
    assert s[3].finish_reason == "tool_calls" and s[3].completion_tokens > 0
    assert s[4].tool_calls == [{"name": "add", "arguments": {}, "invalid_arguments": "{not json"}]
    first, fourth = fake.bodies[0], fake.bodies[3]
    assert first["model"] == "fake-glm" and first["n"] == 1
    assert first["chat_template_kwargs"] == {"enable_thinking": False}
    assert [b["seed"] for b in fake.bodies[:3]] == [100, 101, 102]
    assert fourth["tools"] == tools and fourth["max_tokens"] == 50 and "seed" not in fourth
    assert fourth["chat_template_kwargs"] == {"enable_thinking": True}


def test_backend_accepts_a_base_url_without_v1(fake):
    with OpenAIBackend(fake.url[:-3], API_KEY, "named") as b:
        assert b.model == "named"
        assert b.chat([ChatRequest([{"role": "user", "content": "q"}])])[0].samples[0].content == "hello"


def test_retries_with_backoff_after_500_and_429(fake):
    fake.failures = [(500, {}), (429, {"Retry-After": "0"}), (503, {})]
    start = time.monotonic()
    with backend(fake, backoff_s=0.05) as b:
        [result] = b.chat([ChatRequest([{"role": "user", "content": "q"}])])
    assert result.samples[0].content == "hello"
    assert len(fake.bodies) == 4
    assert time.monotonic() - start >= 0.05  # it did wait between attempts


def test_gives_up_after_max_retries_and_on_client_errors(fake):
    fake.failures = [(500, {})] * 3
    with backend(fake, max_retries=2) as b, pytest.raises(BackendError, match="after 3 attempts.*HTTP 500"):
        b.chat([ChatRequest([{"role": "user", "content": "q"}])])
    assert len(fake.bodies) == 3
    fake.reset()
    fake.failures = [(400, {})]
    with backend(fake) as b, pytest.raises(BackendError, match="HTTP 400: .*injected 400"):
        b.chat([ChatRequest([{"role": "user", "content": "q"}])])
    assert len(fake.bodies) == 1  # a client error is not retried
    with OpenAIBackend(fake.url, "wrong-key", "m") as b, pytest.raises(BackendError, match="401"):
        b.chat([ChatRequest([{"role": "user", "content": "q"}])])


def test_requests_run_concurrently(fake):
    fake.delay_s = 0.3
    with backend(fake, concurrency=8) as b:
        start = time.monotonic()
        results = b.chat([ChatRequest([{"role": "user", "content": str(i)}]) for i in range(8)])
        elapsed = time.monotonic() - start
    assert len(results) == 8 and elapsed < 1.5


# ---------------------------------------------------------------- runner, cache


MATH = [{"id": "m1", "problem": "1+1?", "answer": "2"}, {"id": "m2", "problem": "Half of 1?", "answer": "1/2"},
        {"id": "m3", "problem": "3*3?", "answer": "9"}]
MODEL_MATH = {"1+1?": r"\boxed{2}", "Half of 1?": r"so \boxed{0.5}", "3*3?": r"\boxed{6}"}  # 2 of 3 right


def math_task():
    return make_task("toy_math", "math", enumerate(MATH, 1), "<test>")


def math_responder(body):
    problem = last_user(body).split("\n\n")[0]
    return {"content": MODEL_MATH[problem], "reasoning_content": "thinking..."}


def test_cache_rerun_makes_no_requests(fake, tmp_path):
    fake.responder = math_responder
    cache = tmp_path / "cache"
    with backend(fake) as b:
        first = evaluate(b, [math_task()], tmp_path / "run1", sampling=Sampling(k=2), cache_dir=cache,
                         show_progress=False)
    assert len(fake.bodies) == 6 and first["cache"] == {"dir": str(cache), "hits": 0, "misses": 6}
    with backend(fake) as b:
        second = evaluate(b, [math_task()], tmp_path / "run2", sampling=Sampling(k=2), cache_dir=cache,
                          show_progress=False)
    assert len(fake.bodies) == 6  # nothing regenerated
    assert second["cache"]["hits"] == 6 and second["cache"]["misses"] == 0
    assert second["tasks"]["toy_math"]["items"] == first["tasks"]["toy_math"]["items"]
    with backend(fake) as b:  # a larger k only generates the new samples
        third = evaluate(b, [math_task()], tmp_path / "run3", sampling=Sampling(k=3), cache_dir=cache,
                         show_progress=False)
    assert len(fake.bodies) == 9 and third["cache"] == {"dir": str(cache), "hits": 6, "misses": 3}
    with backend(fake) as b:  # other settings are other requests
        evaluate(b, [math_task()], tmp_path / "run4", sampling=Sampling(k=2, enable_thinking=False),
                 cache_dir=cache, show_progress=False)
    assert len(fake.bodies) == 15


def choice_responder(correct: dict[str, str]):
    def respond(body):
        text = last_user(body)
        question = text.split("\n\n")[0]
        letter = next(m.group(1) for m in re.finditer(r"^([A-Z])\) (.*)$", text, re.M)
                      if m.group(2) == correct[question])
        return {"content": f"Let me think.\nAnswer: {letter}"}
    return respond


def test_runner_end_to_end_over_http(fake, tmp_path):
    he = resolve_task("humaneval")
    canonical = {r["prompt"]: r["prompt"] + r["canonical_solution"] for r in he.records[:2]}
    choice_records = [{"id": "c1", "question": "Capital of France?", "options": ["Rome", "Paris", "Oslo", "Bern"],
                       "answer": "Paris"},
                      {"id": "c2", "question": "2+2?", "options": ["3", "4", "5"], "answer": 1}]
    fc_records = [{"id": "f1", "question": "Weather in Paris?", "tools": [{"name": "weather.get", "parameters": {
        "type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
        "ground_truth": [{"weather.get": {"city": ["Paris"]}}]},
        {"id": "f2", "question": "Tell me a joke.", "tools": [{"name": "weather.get", "parameters": {
            "type": "dict", "properties": {"city": {"type": "string"}}}}], "ground_truth": []}]
    choice_answers = {"Capital of France?": "Paris", "2+2?": "4"}

    def respond(body):
        text = last_user(body)
        if body.get("tools"):  # calls the weather tool for every question: right for f1, wrong for f2
            return {"tool_calls": [{"id": "1", "type": "function", "function": {
                "name": body["tools"][0]["function"]["name"], "arguments": json.dumps({"city": "paris"})}}]}
        if "```python" in text:
            prompt = text.split("```python\n", 1)[1].rsplit("```", 1)[0]
            return {"content": f"```python\n{canonical[prompt]}```"}
        if "Answer: X" in text:
            return choice_responder(choice_answers)(body)
        return math_responder(body)

    fake.responder = respond
    tasks = [math_task(), make_task("toy_choice", "choice", enumerate(choice_records, 1), "<t>"),
             make_task("toy_bfcl", "function_call", enumerate(fc_records, 1), "<t>"), he]
    out = tmp_path / "out"
    with backend(fake) as b:
        results = evaluate(b, tasks, out, sampling=Sampling(k=2, enable_thinking=False), limit=2,
                           show_progress=False)
    metrics = {name: t["metrics"] for name, t in results["tasks"].items()}
    assert metrics["toy_math"] == {"avg@2": 1.0}  # first two math items (limit 2) are both right
    assert metrics["toy_choice"] == {"avg@2": 1.0}
    assert metrics["toy_bfcl"] == {"avg@2": 0.5}
    assert metrics["humaneval"] == {"avg@2": 1.0, "pass@1": 1.0, "pass@2": 1.0}
    assert all(b["chat_template_kwargs"] == {"enable_thinking": False} for b in fake.bodies)
    assert all(b["tools"][0]["function"]["name"] == "weather_get" for b in fake.bodies if b.get("tools"))

    saved = json.loads((out / "results.json").read_text())
    assert saved["tasks"].keys() == results["tasks"].keys() and saved["sampling"]["k"] == 2
    bfcl_items = saved["tasks"]["toy_bfcl"]["items"]
    assert [it["id"] for it in bfcl_items] == ["f1", "f2"] and len(bfcl_items[0]["samples"]) == 2
    assert "expected no call" in bfcl_items[1]["samples"][0]["details"]["reason"]
    math_sample = saved["tasks"]["toy_math"]["items"][1]["samples"][0]
    assert math_sample["details"]["extracted"] == "0.5" and math_sample["reasoning_content"] == "thinking..."
    summary = (out / "summary.md").read_text()
    assert "| toy_bfcl | function_call | 2 | avg@2 | 50.0 |" in summary
    assert "| humaneval | code | 2 | avg@2 | 100.0 | pass@1 100.0 · pass@2 100.0 |" in summary
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["task"] for x in lines] == ["toy_math", "toy_choice", "toy_bfcl", "humaneval"]
    assert json.loads((out / "summary.json").read_text())["tasks"]["toy_bfcl"]["avg@2"] == 0.5


# ---------------------------------------------------------------- CLI


def test_cli_over_http(fake, tmp_path, capsys):
    fake.responder = math_responder
    path = tmp_path / "toy.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in MATH) + "\n")
    out = tmp_path / "out"
    args = ["eval", "--base-url", fake.url, "--api-key", API_KEY, "--tasks", f"math:{path}", "--k", "2",
            "--out", str(out), "--no-thinking", "--quiet"]
    assert glm45_main(args) == 0
    printed = capsys.readouterr().out
    assert "| toy | math | 3 | avg@2 | 66.7 |" in printed and "0 hits, 6 generated" in printed
    assert all(b["chat_template_kwargs"] == {"enable_thinking": False} for b in fake.bodies)
    assert glm45_main(args + ["--limit", "1"]) == 0  # the default cache (OUT/cache) answers the rerun
    assert "2 hits, 0 generated" in capsys.readouterr().out
    assert len(fake.bodies) == 6
    assert (out / "results.json").exists() and (out / "cache").is_dir()


def test_cli_errors_are_clear(fake, tmp_path, capsys):
    base = ["eval", "--out", str(tmp_path / "o"), "--quiet"]
    assert glm45_main(base + ["--tasks", "humaneval"]) == 2
    assert "exactly one of --model DIR or --base-url URL" in capsys.readouterr().err
    assert glm45_main(base + ["--base-url", fake.url, "--api-key", API_KEY, "--tasks", "nosuchtask"]) == 2
    assert "unknown task 'nosuchtask'" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "x"}\n')
    assert glm45_main(base + ["--base-url", fake.url, "--api-key", API_KEY, "--tasks", f"math:{bad}"]) == 2
    assert f"{bad}:1: field 'answer'" in capsys.readouterr().err
    assert glm45_main(base + ["--model", str(tmp_path), "--tasks", "humaneval"]) == 2
    assert "is not a glm45 checkpoint" in capsys.readouterr().err
    assert glm45_main(base + ["--base-url", "ftp://x", "--tasks", "humaneval"]) == 2
    assert "http(s) URL" in capsys.readouterr().err
