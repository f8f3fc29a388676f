"""Work stops when its client goes away: an SSE stream is closed (aborting its engine request)
when the connection drops, and a non-streamed request is cancelled too, instead of generating
for nobody. Shared by the OpenAI-compatible and SGLang routes."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

T = TypeVar("T")

CLIENT_CLOSED = 499  # nginx's "client closed request": nobody reads it, logs show why


class SSEResponse(StreamingResponse):
    """Closes its event generator however the response ends, then calls `on_close`. Under ASGI
    spec 2.4 servers Starlette ends a stream whose client left by raising from `send`, leaving
    the generator suspended at a `yield`: until garbage collection closed it, the request would
    keep running."""

    body_iterator: AsyncIterator[str]

    def __init__(
        self,
        events: AsyncIterator[str],
        on_close: Callable[[], Awaitable[None] | None] | None = None,
    ) -> None:
        super().__init__(events, media_type="text/event-stream")
        self.headers["cache-control"] = "no-cache"
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()
            finally:
                if self.on_close is not None and inspect.isawaitable(done := self.on_close()):
                    await done


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | Response:
    """`work`'s result, or a 499 if the client left first (then `work` is cancelled, which
    aborts its engine request)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return Response(status_code=CLIENT_CLOSED)
    return task.result()
