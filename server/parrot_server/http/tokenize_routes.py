"""`POST /tokenize` and `POST /detokenize` (vLLM's shapes). Thin: logic in `TokenizeService`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from parrot_integrations.protocol.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)

from ..tokenize_service import TokenizeService
from .openapi_doc import BODY, errors
from .valid_text import reject_lone_surrogates

router = APIRouter(tags=["tokenize"], dependencies=[Depends(reject_lone_surrogates)])
# A bad body or text, a key, an unknown model.
_ERRORS = errors(*BODY, 401, 404)


def _service(request: Request) -> TokenizeService:
    return request.app.state.tokenize_service


@router.post("/tokenize", response_model=TokenizeResponse, responses=_ERRORS)
async def tokenize(body: TokenizeRequest, request: Request) -> JSONResponse:
    result = await _service(request).tokenize(body)
    return JSONResponse(result.model_dump(exclude_none=True))  # token_strs only when asked


@router.post("/detokenize", responses=_ERRORS)
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    return await _service(request).detokenize(body)
