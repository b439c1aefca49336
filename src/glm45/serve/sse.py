"""Server-sent events and the plumbing around streamed generations: merging the streams of
several choices, and cancelling work whose client has gone away."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from starlette.requests import Request

T = TypeVar("T")
DONE = "data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> str:
    # ASCII-only JSON: raw U+2028, U+0085 and friends in generated text would split the event
    # for clients that break lines with str.splitlines() (httpx's aiter_lines does).
    return "data: " + json.dumps(obj, ensure_ascii=True, separators=(",", ":")) + "\n\n"


async def merge(streams: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """(stream index, item) from several async iterators as items arrive. Closing this
    generator (or cancelling its consumer) cancels every stream, which aborts its engine request."""
    if len(streams) == 1:  # the common case needs no tasks
        async for item in streams[0]:
            yield 0, item
        return
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump(i: int, stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((i, item, None))
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # handed to the consumer, which re-raises it
            await queue.put((i, end, e))
            return
        await queue.put((i, end, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        open_streams = len(tasks)
        while open_streams:
            i, item, err = await queue.get()
            if err is not None:
                raise err
            if item is end:
                open_streams -= 1
                continue
            yield i, item
    finally:
        for t in tasks:
            t.cancel()  # not awaited: the consumer may itself be cancelled; each task cleans up alone


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T | None:
    """Run `work` unless the client disconnects first; then cancel it (which aborts its engine
    requests) and return None: there is nobody to answer. For non-streamed requests, whose
    handler Starlette would otherwise let run to the end."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    return task.result() if task.done() and not task.cancelled() else None
