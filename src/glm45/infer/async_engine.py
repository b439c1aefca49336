"""`AsyncEngine`: an `Engine` driven by a background thread, for asyncio servers.

The thread owns the engine: it runs queued commands (add, abort, weight updates, scoring)
between steps and steps while anything is unfinished, handing each request's outputs to the
event loop that asked for them. Closing a stream early (client gone, task cancelled) aborts its
request, which frees the batch row at once.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from glm45.infer.engine import Engine, InferenceError, Prompt
from glm45.infer.outputs import GenerationResult, RequestOutput
from glm45.infer.params import SamplingParams


def _put_all(batch: list[tuple[asyncio.Queue, Any]]) -> None:
    for queue, item in batch:
        queue.put_nowait(item)


class EngineClosedError(RuntimeError):
    """The AsyncEngine was shut down."""


class AsyncEngine:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._cv = threading.Condition()
        self._commands: list[tuple[Callable[[], Any], Callable[[Any, BaseException | None], None]]] = []
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="glm45-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_pretrained(cls, directory, dtype=None, **kwargs) -> "AsyncEngine":
        return cls(Engine.from_pretrained(directory, dtype=dtype, **kwargs))

    # ------------------------------------------------------------ engine thread
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._commands and not self.engine.has_unfinished() and not self._closed:
                    self._cv.wait()
                if self._closed:
                    break
                commands, self._commands = self._commands, []
            for fn, reply in commands:
                try:
                    result = fn()
                except BaseException as e:  # noqa: BLE001 - handed to the caller, who re-raises
                    reply(None, e)
                else:
                    reply(result, None)
            if self.engine.has_unfinished():
                try:
                    outputs = self.engine.step()
                except BaseException as e:  # noqa: BLE001 - every waiting stream gets the error
                    self._fail_all(e)
                    continue
                self._deliver([(out.request_id, out) for out in outputs])
        self._fail_all(EngineClosedError("the engine was shut down"))

    def _deliver(self, items: list[tuple[str, Any]]) -> None:
        """Hand each (request id, output or error) to its stream: one wake-up per event loop, not
        one per request. Each wake-up writes to the loop's self-pipe; one per request per step
        cost the engine thread 8% of a batch-16 serving run."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, Any]]] = {}
        for request_id, item in items:
            stream = self._streams.get(request_id)
            if stream is not None:
                loop, queue = stream
                by_loop.setdefault(loop, []).append((queue, item))
        for loop, batch in by_loop.items():
            loop.call_soon_threadsafe(_put_all, batch)

    def _fail_all(self, error: BaseException) -> None:
        rids = list(self._streams)
        for rid in rids:
            self.engine.abort(rid)
        self._deliver([(rid, error) for rid in rids])
        self.engine.step()  # drop the abort outputs; those streams already got the error

    def _submit(self, fn: Callable[[], Any], reply=lambda result, error: None) -> None:
        with self._cv:
            if self._closed:
                raise EngineClosedError("the engine was shut down")
            self._commands.append((fn, reply))
            self._cv.notify()

    async def _call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the engine thread between steps; return its result (or raise its error)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def reply(result, error):
            def settle():
                if fut.done():
                    return
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(result)
            loop.call_soon_threadsafe(settle)

        self._submit(fn, reply)
        return await fut

    # ------------------------------------------------------------------- API
    async def generate_stream(self, prompt: Prompt, params: SamplingParams | None = None,
                              request_id: str | None = None) -> AsyncIterator[RequestOutput]:
        """Yield the request's `RequestOutput`s as steps produce them, the last with finished=True."""
        ids = self.engine.prompt_ids(prompt)  # tokenise here, not on the engine thread
        request_id = request_id or f"req-{uuid.uuid4().hex}"
        queue: asyncio.Queue = asyncio.Queue()
        if request_id in self._streams:
            raise InferenceError(f"request id {request_id!r} is already in use")
        self._streams[request_id] = (asyncio.get_running_loop(), queue)
        finished = False
        try:
            await self._call(lambda: self.engine.add_request(ids, params, request_id))
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished and not self._closed:
                self._submit(lambda: self.engine.abort(request_id))

    async def generate(self, prompt: Prompt, params: SamplingParams | None = None,
                       request_id: str | None = None) -> GenerationResult:
        async for out in self.generate_stream(prompt, params, request_id):
            if out.finished:
                return out.result
        raise EngineClosedError("the stream ended without a result")

    async def abort(self, request_id: str) -> bool:
        return await self._call(lambda: self.engine.abort(request_id))

    async def update_weights(self, weights, *, strict: bool = True) -> None:
        await self._call(lambda: self.engine.update_weights(weights, strict=strict))

    async def score(self, prompt_ids, completion_ids, *, temperature: float = 1.0) -> list[float]:
        return await self._call(lambda: self.engine.score(prompt_ids, completion_ids, temperature=temperature))

    def stats(self) -> dict[str, Any]:
        """Queue depth, running batch size, totals (tokens, forwards, acceptance rate...)."""
        s = self.engine.stats()
        s["queue_depth"] = s["waiting"]
        s["batch_size"] = s["running"]
        s["streams"] = len(self._streams)
        return s

    def shutdown(self, timeout: float | None = 10.0) -> None:
        """Stop the engine thread; open streams end with EngineClosedError."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout)
