"""OpenAI-compatible routes (`/v1/...`). Thin: logic lives in `OpenAIService`.

The only HTTP concern handled here is the client going away: a stream is closed (aborting its
engine request) when the connection drops, and a non-streamed request is cancelled too,
instead of generating for nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from parrot_integrations.protocol.openai import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    Model,
    ModelList,
)

from ..openai_service import OpenAIService
from .openapi_doc import BODY, errors, event_stream
from .valid_text import reject_lone_surrogates

router = APIRouter(prefix="/v1", dependencies=[Depends(reject_lone_surrogates)])
# What a completion route may answer: a bad body, a key, an unknown model or session, a full
# engine queue.
_COMPLETION_ERRORS = errors(*BODY, 401, 404, 503)
T = TypeVar("T")

CLIENT_CLOSED = 499  # nginx's "client closed request": nobody reads it, logs show why


def _service(request: Request) -> OpenAIService:
    state = request.app.state
    service = getattr(state, "openai_service", None)
    if service is None:  # one per app: `created` of /v1/models stays put
        core = state.core
        sessions = getattr(core, "sessions", None)
        service = state.openai_service = OpenAIService(core.engine, core.metrics, sessions)
    return service


class _SSEResponse(StreamingResponse):
    """Closes its event generator however the response ends. Under ASGI spec 2.4 servers
    Starlette ends a stream whose client left by raising from `send`, leaving the generator
    suspended at a `yield`: until garbage collection closed it, the request would keep running."""

    body_iterator: AsyncIterator[str]

    def __init__(self, events: AsyncIterator[str]) -> None:
        super().__init__(events, media_type="text/event-stream")
        self.headers["cache-control"] = "no-cache"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T | Response:
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


@router.post(
    "/chat/completions",
    response_model=None,
    responses=event_stream(ChatCompletion) | _COMPLETION_ERRORS,
)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    service = _service(request)
    if body.stream:
        return _SSEResponse(await service.chat_stream(body))
    result = await _unless_disconnected(request, service.chat(body))
    return result if isinstance(result, Response) else JSONResponse(result.model_dump())


@router.post(
    "/completions", response_model=None, responses=event_stream(Completion) | _COMPLETION_ERRORS
)
async def completions(body: CompletionRequest, request: Request) -> Response:
    service = _service(request)
    if body.stream:
        return _SSEResponse(await service.completion_stream(body))
    result = await _unless_disconnected(request, service.completion(body))
    return result if isinstance(result, Response) else JSONResponse(result.model_dump())


@router.get("/models", response_model=ModelList, responses=errors(401))
async def list_models(request: Request) -> JSONResponse:
    return JSONResponse(_service(request).list_models().model_dump())


@router.get("/models/{model:path}", response_model=Model, responses=errors(401, 404))
async def get_model(model: str, request: Request) -> JSONResponse:
    return JSONResponse(_service(request).get_model(model).model_dump())
