"""A backend for any OpenAI-compatible `/v1/chat/completions` endpoint (glm45 serve, vLLM, SGLang, ...).

Each sample is one HTTP request with ``n=1`` (servers differ in how they honour ``n``, and per-sample
requests give exact per-sample token counts and reproducible seeds ``seed + j``). Requests run on a
thread pool of `concurrency`; transport errors, 429 and 5xx answers are retried with exponential
backoff and jitter (honouring ``Retry-After``); other 4xx answers fail at once with the server's
message. Thinking is switched with ``chat_template_kwargs: {"enable_thinking": ...}``; reasoning is
read from ``reasoning_content`` (or ``reasoning``), or split off ``<think>...</think>`` in the content
when a server leaves it there. Tool-call arguments arrive as JSON strings and are parsed to dicts.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from urllib.parse import urlsplit

import httpx

from glm45.eval.backend import BackendError, ChatRequest, ChatResult, ChatSample, EvalError, OnResult

__all__ = ["OpenAIBackend", "parse_choice"]

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def _api_root(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EvalError(f"--base-url must be an http(s) URL like http://127.0.0.1:8000/v1, got {base_url!r}")
    root = base_url.rstrip("/")
    return root if root.endswith("/v1") else root + "/v1"


def _split_think(content: str) -> tuple[str, str]:
    """(reasoning, content) from content that still carries <think>...</think>."""
    if "</think>" not in content:
        return "", content
    head, _, tail = content.partition("</think>")
    reasoning = head.split("<think>")[-1]
    return reasoning.strip("\n"), tail.lstrip("\n")


def parse_choice(choice: dict, completion_tokens: int = 0) -> ChatSample:
    """One `choices[i]` of a chat.completion response as a ChatSample."""
    message = choice.get("message") or {}
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    if not reasoning:
        reasoning, content = _split_think(content)
    calls = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        raw = fn.get("arguments")
        parsed: dict = {"name": fn.get("name", ""), "arguments": {}}
        if isinstance(raw, dict):
            parsed["arguments"] = raw
        elif raw not in (None, ""):
            try:
                value = json.loads(raw)
            except (TypeError, ValueError):
                value = None
            if isinstance(value, dict):
                parsed["arguments"] = value
            else:  # kept so scorers can report it; a call with these arguments never passes
                parsed["invalid_arguments"] = raw
        calls.append(parsed)
    return ChatSample(content=content, reasoning_content=reasoning, tool_calls=calls,
                      finish_reason=choice.get("finish_reason") or "stop",
                      completion_tokens=int(completion_tokens or 0))


class OpenAIBackend:
    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None, *,
                 concurrency: int = 8, max_retries: int = 5, timeout_s: float = 1800.0,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0):
        if concurrency < 1 or max_retries < 0:
            raise EvalError("concurrency must be >= 1 and max_retries >= 0")
        self.root = _api_root(base_url)
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.Client(headers=headers, timeout=timeout_s, limits=limits)
        self.model = model or self._first_model()
        self.name = f"openai:{self.root}:{self.model}"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _first_model(self) -> str:
        data = self._request("GET", "/models", None)
        models = [m.get("id") for m in data.get("data", []) if m.get("id")]
        if not models:
            raise BackendError(f"{self.root}/models lists no model; pass --model-name")
        return models[0]

    def _request(self, method: str, path: str, body: dict | None) -> dict:
        url = self.root + path
        attempt = 0
        while True:
            try:
                response = self._client.request(method, url, json=body)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
                delay = None
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError as e:
                        raise BackendError(f"{url} answered 200 with a body that is not JSON: "
                                           f"{response.text[:300]!r}") from e
                last = f"HTTP {response.status_code}: {response.text[:500]}"
                if response.status_code not in _RETRY_STATUS:
                    raise BackendError(f"{method} {url} failed with {last}")
                delay = _retry_after(response)
            if attempt == self.max_retries:
                raise BackendError(f"{method} {url} failed after {self.max_retries + 1} attempts; last: {last}")
            if delay is None:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * (0.5 + random.random() / 2)
            time.sleep(delay)
            attempt += 1

    def _body(self, request: ChatRequest) -> dict:
        body = {
            "model": self.model,
            "messages": request.messages,
            "n": 1,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "chat_template_kwargs": {"enable_thinking": request.enable_thinking},
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.tools:
            body["tools"] = request.tools
        return body

    def _one(self, request: ChatRequest) -> ChatSample:
        data = self._request("POST", "/chat/completions", self._body(request))
        choices = data.get("choices") or []
        if not choices:
            raise BackendError(f"{self.root}/chat/completions answered without choices: {str(data)[:300]}")
        tokens = (data.get("usage") or {}).get("completion_tokens", 0)
        return parse_choice(choices[0], tokens)

    def chat(self, requests: Sequence[ChatRequest], on_result: OnResult | None = None) -> list[ChatResult]:
        samples: list[list[ChatSample | None]] = [[None] * r.n for r in requests]
        remaining = [r.n for r in requests]
        lock = threading.Lock()
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = {pool.submit(self._one, r.sample(j)): (i, j)
                       for i, r in enumerate(requests) for j in range(r.n)}
            try:
                for future in as_completed(futures):
                    i, j = futures[future]
                    samples[i][j] = future.result()
                    with lock:
                        remaining[i] -= 1
                        done = remaining[i] == 0
                    if done and on_result is not None:
                        on_result(i, ChatResult(list(samples[i])))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return [ChatResult(list(s)) for s in samples]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    if re.fullmatch(r"\d+(\.\d+)?", value.strip()):
        return min(float(value), 300.0)
    return None
