"""`POST /v1/embeddings` (OpenAI's shape). Thin: logic in `EmbeddingService`, built at startup
(`create_app`'s `embeddings`); without one the route is a 404 saying how to enable it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from parrot_integrations.protocol.embeddings import EmbeddingRequest, EmbeddingResponse

from ..embedding_service import EmbeddingsDisabledError
from .client_gone import unless_disconnected
from .openapi_doc import BODY, errors
from .valid_text import reject_lone_surrogates

router = APIRouter(prefix="/v1", dependencies=[Depends(reject_lone_surrogates)])
# A bad body or input, a key, an unknown model (or none served), the model not loaded or the
# server stopping.
_ERRORS = errors(*BODY, 401, 404, 503)


@router.post("/embeddings", response_model=EmbeddingResponse, responses=_ERRORS)
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    service = request.app.state.embedding_service
    if service is None:
        raise EmbeddingsDisabledError()
    result = await unless_disconnected(request, service.embed(body))
    if isinstance(result, Response):
        return result
    return Response(result.model_dump_json(), media_type="application/json")
