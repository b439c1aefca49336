"""Run the app under uvicorn: in the foreground (the CLI) or in a background thread on a free
local port (tests, benchmarks, notebooks)."""

from __future__ import annotations

import signal
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def uvicorn_config(app: FastAPI, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    # One event loop and no access log per request: the engine, not HTTP, is the bottleneck, and
    # a log line per streamed request would cost more than the request on a small model.
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          timeout_graceful_shutdown=5, lifespan="on")


class ForegroundServer(uvicorn.Server):
    """The CLI's server: remembers a Ctrl-C. uvicorn shuts down gracefully on SIGINT and then
    re-raises it, but under asyncio's runner the re-raised signal only cancels the serving task;
    when that task has already finished, the interrupt is dropped and the process would exit 0
    instead of 130 (seen once in the test suite)."""

    interrupted = False

    def handle_exit(self, sig: int, frame) -> None:
        self.interrupted = self.interrupted or sig == signal.SIGINT
        super().handle_exit(sig, frame)


class ServerThread:
    """`with ServerThread(app) as s: s.base_url` — uvicorn in a daemon thread, stopped on exit."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None,
                 log_level: str = "warning", startup_timeout: float = 60.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(uvicorn_config(app, self.host, self.port, log_level))
        self._thread = threading.Thread(target=self.server.run, name="glm45-serve", daemon=True)
        self._startup_timeout = startup_timeout

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"server on {self.base_url} exited during startup (see its log)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server on {self.base_url} did not start in {self._startup_timeout:.0f} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
