"""Clients that go away: their engine requests are aborted and batch rows freed; and a long
request never stalls a short one (continuous batching)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
from conftest_serve import CONTENT, MODEL_NAME, content_chain, make_backend, scripted_model, start_server

USER = [{"role": "user", "content": "hello"}]
# Past the script's EOS the output runs on (ignore_eos), so this request would take many seconds.
LONG = {"model": MODEL_NAME, "messages": USER, "max_tokens": 1000, "ignore_eos": True,
        "chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def backend():
    return make_backend(scripted_model(content_chain()), max_batch_size=4)


@pytest.fixture(scope="module")
def server(backend):
    s = start_server(backend)
    yield s
    s.stop()


def wait_idle(backend, timeout: float = 10.0) -> float:
    """Seconds until the engine has no running or waiting request (fails after `timeout`)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        s = backend.stats()
        if s["running"] == 0 and s["queue_depth"] == 0 and not backend.engine.requests:
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"engine still busy after {timeout} s: {backend.stats()}")


def generated(backend) -> int:
    return backend.engine.stats()["generated_tokens"]


def test_stream_disconnect_frees_the_slot(server, backend):
    wait_idle(backend)
    before = generated(backend)
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", server.base_url + "/v1/chat/completions", json={**LONG, "stream": True}) as r:
            got = 0
            for line in r.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    got += 1
                    if got == 5:
                        break
            assert backend.stats()["running"] == 1
        # leaving the block closes the connection mid-stream
    wait_idle(backend, timeout=5)
    assert generated(backend) - before < 900  # aborted long before max_tokens
    assert backend.engine.stats()["finished"] == backend.engine.stats()["requests"]


def test_non_streamed_disconnect_frees_the_slot(server, backend):
    wait_idle(backend)
    before = generated(backend)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/v1/chat/completions", json=LONG, timeout=httpx.Timeout(30, read=0.5))
    wait_idle(backend, timeout=5)
    assert generated(backend) - before < 900


def test_n_choices_all_aborted_on_disconnect(server, backend):
    wait_idle(backend)
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json={**LONG, "stream": True, "n": 3},
                      timeout=30) as r:
        seen = set()
        for line in r.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                seen.add(json.loads(line[6:])["choices"][0]["index"])
                if len(seen) == 3:
                    break
        assert backend.stats()["running"] == 3
    wait_idle(backend, timeout=5)


def test_long_request_does_not_stall_short_ones(server, backend):
    wait_idle(backend)
    c = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0, timeout=30)
    long_done = threading.Event()

    def long_request():
        c.chat.completions.create(**{k: v for k, v in LONG.items() if k not in ("ignore_eos", "chat_template_kwargs")},
                                  extra_body={"ignore_eos": True, "chat_template_kwargs": {"enable_thinking": False}})
        long_done.set()

    t = threading.Thread(target=long_request, daemon=True)
    t.start()
    while backend.stats()["running"] == 0:
        time.sleep(0.01)
    t0 = time.monotonic()
    r = c.chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=50,
                                  extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert r.choices[0].message.content == CONTENT
    assert not long_done.is_set(), "the short request waited for the long one"
    assert time.monotonic() - t0 < 5
    t.join(timeout=60)
    assert long_done.is_set()
