"""SGLang 0.5.x native runtime endpoints (`/generate`, `/health`, ...). Thin: logic lives in
`EngineService`. Both route names of SGLang's info endpoints are served (`/model_info` and the
0.5.5 name `/get_model_info`, likewise `/server_info`), so clients of either release work.
`/health` is on a router of its own: `parrot serve` answers it with the ServeCore's."""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ..engine_service import EngineService
from ..error_status import status_of
from ..sglang_protocol import AbortRequest, GenerateRequest, GenerateResponse
from .auth import Caller, require_admin
from .client_gone import SSEResponse, unless_disconnected
from .openapi_doc import BODY, TEXT, errors, event_stream
from .valid_text import reject_lone_surrogates

router = APIRouter(dependencies=[Depends(reject_lone_surrogates)])
health_router = APIRouter()
Admin = Depends(require_admin)  # operator routes: the whole engine, every tenant
log = logging.getLogger(__name__)


def _service(request: Request) -> EngineService:
    return request.app.state.engine_service


@health_router.get("/health")
async def health() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/health_generate", responses=errors(401, 503))
async def health_generate(request: Request) -> JSONResponse:
    """Generates one token: 200 once it came, 503 when the engine cannot."""
    await _service(request).health_generate()
    return JSONResponse({"status": "ok"})


_GENERATE_RESPONSES = event_stream(GenerateResponse) | errors(*BODY, 429, 503)


# One route per method: a route's operation id in the OpenAPI document is per route, not per
# method, so a route taking two methods repeats it.
@router.post("/generate", response_model=None, responses=_GENERATE_RESPONSES)
@router.put("/generate", response_model=None, responses=_GENERATE_RESPONSES)
async def generate(body: GenerateRequest, request: Request, who: Caller) -> Response:
    """Stops generating when the client leaves, streamed or not."""
    service = _service(request)
    if not body.stream:
        result = await unless_disconnected(request, service.generate(body, who))
        return result if isinstance(result, Response) else JSONResponse(result.model_dump())
    chunks = await service.generate_stream(body, who)  # bad input raises here: a plain 4xx

    async def sse():
        try:
            async for chunk in chunks:
                yield f"data: {chunk.model_dump_json()}\n\n"
        except Exception as exc:  # the status is sent: report it as SGLang does, in the stream
            status, kind = status_of(exc)
            if status >= 500:
                log.error("stream failed: %s: %s", type(exc).__name__, exc)
            error = {"message": str(exc), "type": kind, "code": status}
            yield f"data: {json.dumps({'error': error})}\n\n"
        yield "data: [DONE]\n\n"

    return SSEResponse(sse(), chunks.aclose)  # closed however the response ends


@router.post("/abort_request", responses=errors(*BODY))
async def abort_request(body: AbortRequest, request: Request, who: Caller) -> JSONResponse:
    """200 as SGLang; the body (which requests were running and are now aborted) is ours. A
    tenant aborts only its own `/generate` requests; the operator any."""
    aborted = await _service(request).abort(who, None if body.abort_all else body.rid)
    return JSONResponse({"aborted": aborted})


@router.get("/flush_cache", response_class=PlainTextResponse, responses=TEXT, dependencies=[Admin])
@router.post("/flush_cache", response_class=PlainTextResponse, responses=TEXT, dependencies=[Admin])
async def flush_cache(request: Request) -> PlainTextResponse:
    freed = await _service(request).engine.flush_cache()
    return PlainTextResponse(f"Cache flushed: {freed} cached tokens freed.\n")


@router.get("/model_info")
@router.get("/get_model_info")
async def model_info(request: Request) -> JSONResponse:
    return JSONResponse(await _service(request).model_info())


@router.get("/server_info", dependencies=[Admin])
@router.get("/get_server_info", dependencies=[Admin])
async def server_info(request: Request) -> JSONResponse:
    return JSONResponse(await _service(request).server_info())


@router.get("/get_load", dependencies=[Admin])
async def get_load(request: Request) -> JSONResponse:
    loads = await _service(request).get_load()
    return JSONResponse([entry.model_dump() for entry in loads])
