"""`POST /tokenize` and `POST /detokenize` (vLLM's shapes). Thin: logic in `TokenizeService`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from parrot_integrations.protocol.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
)

from ..tokenize_service import TokenizeService
from .openai_routes import openai_service

router = APIRouter(tags=["tokenize"])


def _service(request: Request) -> TokenizeService:
    state = request.app.state
    service = getattr(state, "tokenize_service", None)
    if service is None:  # over the app's one OpenAIService: chats render as /v1 renders them
        limit = state.core.config.max_value_chars
        service = state.tokenize_service = TokenizeService(openai_service(request), limit)
    return service


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> JSONResponse:
    result = await _service(request).tokenize(body)
    return JSONResponse(result.model_dump(exclude_none=True))  # token_strs only when asked


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    return await _service(request).detokenize(body)
