"""`glm45 serve` as a user runs it: a subprocess on a free port, loaded from a checkpoint directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest
from conftest_serve import tiny_checkpoint

from glm45.serve.server import free_port


def glm45(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "glm45", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kw)


def test_help_lists_the_options():
    out = subprocess.run([sys.executable, "-m", "glm45", "serve", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    for flag in ("--model", "--host", "--port", "--api-key", "--served-model-name", "--max-batch-size",
                 "--speculative", "--compile", "--default-thinking", "--threads"):
        assert flag in out.stdout
    assert "127.0.0.1" in out.stdout


def test_missing_model_dir_is_a_clear_error(tmp_path):
    proc = glm45("serve", "--model", str(tmp_path / "nope"), "--port", str(free_port()))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "is not a directory" in out


def test_zero_threads_is_a_clear_error(tmp_path):
    proc = glm45("serve", "--model", str(tmp_path), "--port", str(free_port()), "--threads", "0")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--threads: must be at least 1, got 0" in out


@pytest.mark.slow  # three interpreter starts and a model load: ~10 s on a loaded 2-core machine
def test_serve_subprocess():
    ckpt = tiny_checkpoint()
    port = free_port()
    proc = glm45("serve", "--model", ckpt, "--port", str(port), "--api-key", "k1", "--served-model-name", "tiny",
                 "--default-thinking", "off", "--max-batch-size", "4", "--speculative", "--threads", "1", "--log-level", "warning")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        c = openai.OpenAI(base_url=base + "/v1", api_key="k1", max_retries=0, timeout=30)
        assert [m.id for m in c.models.list().data] == ["tiny"]
        r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert r.usage.completion_tokens >= 1 and r.choices[0].finish_reason in ("stop", "length")
        with openai.OpenAI(base_url=base + "/v1", api_key="bad", max_retries=0) as bad:
            try:
                bad.models.list()
                raise AssertionError("a wrong key was accepted")
            except openai.AuthenticationError:
                pass
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises Ctrl-C: the CLI's exit code for an interrupt
    assert proc.returncode == 130 and "Traceback" not in out, out
    assert "serving 'tiny'" in out and "127.0.0.1" in out and "threads 1," in out


def test_foreground_server_remembers_ctrl_c_but_not_sigterm():
    """The CLI exits 130 after a Ctrl-C even when asyncio drops uvicorn's re-raised SIGINT."""
    from fastapi import FastAPI

    from glm45.serve.server import ForegroundServer, uvicorn_config

    for sig, interrupted in ((signal.SIGTERM, False), (signal.SIGINT, True)):
        server = ForegroundServer(uvicorn_config(FastAPI(), "127.0.0.1", free_port()))
        server.handle_exit(sig, None)
        assert server.should_exit and server.interrupted is interrupted
