"""OpenAI-compatible routes (`/v1/...`). Thin: logic lives in `OpenAIService`; a request whose
client leaves stops (`client_gone`), and counts against its tenant's pending work until then."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from parrot_integrations.protocol.openai import ChatCompletionRequest, CompletionRequest

from ..openai_service import OpenAIService
from .auth import Caller
from .client_gone import SSEResponse, unless_disconnected

router = APIRouter(prefix="/v1")


def openai_service(request: Request) -> OpenAIService:
    state = request.app.state
    service = getattr(state, "openai_service", None)
    if service is None:  # one per app: `created` of /v1/models stays put
        core = state.core
        sessions = getattr(core, "sessions", None)
        service = state.openai_service = OpenAIService(core.engine, core.metrics, sessions)
        core.stop_hooks.append(service.stop_all)
    return service


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


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request, who: Caller) -> Response:
    service = openai_service(request)
    return await _answer(request, who, body, service.chat_stream, service.chat)


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request, who: Caller) -> Response:
    service = openai_service(request)
    return await _answer(request, who, body, service.completion_stream, service.completion)


@router.get("/models")
async def list_models(request: Request) -> JSONResponse:
    return JSONResponse(openai_service(request).list_models().model_dump())


@router.get("/models/{model:path}")
async def get_model(model: str, request: Request) -> JSONResponse:
    return JSONResponse(openai_service(request).get_model(model).model_dump())
