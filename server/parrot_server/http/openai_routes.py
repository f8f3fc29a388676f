"""OpenAI-compatible routes (`/v1/...`). Thin: logic lives in `OpenAIService`; a request whose
client leaves stops (`client_gone`), and counts against its tenant's pending work until then."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from parrot_integrations.protocol.openai import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    Model,
    ModelList,
)

from ..openai_service import OpenAIService
from .auth import Caller
from .client_gone import SSEResponse, unless_disconnected
from .openapi_doc import BODY, errors, event_stream
from .valid_text import reject_lone_surrogates

router = APIRouter(prefix="/v1", dependencies=[Depends(reject_lone_surrogates)])
# What a completion route may answer: a bad body, a key, an unknown model or session, a
# tenant's quota, a full engine queue.
_COMPLETION_ERRORS = errors(*BODY, 401, 404, 429, 503)


def openai_service(request: Request) -> OpenAIService:
    return request.app.state.openai_service


async def _answer(request: Request, who: Caller, body: Any, streamed: Any, whole: Any) -> Response:
    """`streamed(body, tenant)` as SSE or `whole(body, tenant)` as JSON, the request counted
    against its tenant's pending work until the answer ends."""
    slot = request.app.state.core.tenant_load.slot(who.tenant)
    try:
        if body.stream:
            return SSEResponse(await streamed(body, who.tenant), slot.release)
        result = await unless_disconnected(request, whole(body, who.tenant))
    except BaseException:
        slot.release()
        raise
    slot.release()
    return result if isinstance(result, Response) else JSONResponse(result.model_dump())


@router.post(
    "/chat/completions",
    response_model=None,
    responses=event_stream(ChatCompletion) | _COMPLETION_ERRORS,
)
async def chat_completions(body: ChatCompletionRequest, request: Request, who: Caller) -> Response:
    service = openai_service(request)
    return await _answer(request, who, body, service.chat_stream, service.chat)


@router.post(
    "/completions", response_model=None, responses=event_stream(Completion) | _COMPLETION_ERRORS
)
async def completions(body: CompletionRequest, request: Request, who: Caller) -> Response:
    service = openai_service(request)
    return await _answer(request, who, body, service.completion_stream, service.completion)


@router.get("/models", response_model=ModelList, responses=errors(401))
async def list_models(request: Request) -> JSONResponse:
    return JSONResponse(openai_service(request).models.list().model_dump())


@router.get("/models/{model:path}", response_model=Model, responses=errors(401, 404))
async def get_model(model: str, request: Request) -> JSONResponse:
    return JSONResponse(openai_service(request).models.get(model).model_dump())
