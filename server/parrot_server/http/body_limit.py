"""Request bodies are bounded in size and in time, before any route sees them.

A pure ASGI middleware reads the whole body first: a `Content-Length` over the limit is a 413 at
once (nothing read); otherwise bytes are counted as they arrive, whatever the headers say, and
the read stops with a 413 the moment the count passes the limit. The whole body must arrive
within the timeout, else a 408: a client that trickles its body, stalls, or announces more bytes
than it sends cannot hold a connection and its buffer forever. Both answers close the connection
(the rest of the body is never read). A client that disconnects mid-body gets nothing.

The routes then get the body from memory, as FastAPI would have held it anyway; later reads
(`http.disconnect`) go to the server as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = _content_length(scope)
        if announced is not None and announced > self.max_bytes:
            await self._refuse(
                scope, receive, send, 413, f"the request body of {announced} bytes is over"
            )
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client left: nobody to answer
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        await self._refuse(scope, receive, send, 413, "the request body is over")
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await self._refuse(
                scope,
                receive,
                send,
                408,
                f"the request body did not arrive within {self.timeout_seconds:g} s "
                f"({size} bytes received)",
            )
            return
        body: Message | None = {
            "type": "http.request",
            "body": b"".join(chunks),
            "more_body": False,
        }

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, status: int, message: str
    ) -> None:
        if status == 413:
            message += f" the limit of {self.max_bytes} bytes (--max-request-bytes)"
        else:
            message += " (--request-body-timeout)"
        response = error_response(
            status, "invalid_request_error", message, headers={"Connection": "close"}
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    try:
        return int(Headers(scope=scope).get("content-length", ""))
    except ValueError:
        return None  # absent; a malformed one the server refuses before we run


def install_body_limit(app: Any, max_bytes: int, timeout_seconds: float) -> None:
    """Middleware added later wraps this one: an API key check added after it refuses a
    request before its body is read."""
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes, timeout_seconds=timeout_seconds)
