"""SGLang 0.5.x native runtime endpoints (`/generate`, `/health`, ...). Thin: logic lives in
`EngineService`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from parrot_integrations.protocol.sglang import AbortRequest, GenerateRequest

from ..engine_service import EngineService

router = APIRouter()


def _service(request: Request) -> EngineService:
    return request.app.state.engine_service


@router.get("/health")
async def health() -> Response:
    return Response(status_code=200)


@router.post("/generate", response_model=None)
async def generate(body: GenerateRequest, request: Request) -> Response:
    service = _service(request)
    if not body.stream:
        return JSONResponse((await service.generate(body)).model_dump())
    chunks = await service.generate_stream(body)

    async def sse():
        async for chunk in chunks:
            yield f"data: {chunk.model_dump_json()}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream")


@router.post("/abort_request")
async def abort_request(body: AbortRequest, request: Request) -> JSONResponse:
    engine = _service(request).engine
    if body.abort_all:
        rids = await engine.call(lambda: list(engine.engine.requests))
        aborted = [rid for rid in rids if await engine.abort(rid)]
    else:
        aborted = [body.rid] if await engine.abort(body.rid) else []
    return JSONResponse({"aborted": aborted})


@router.api_route("/flush_cache", methods=["GET", "POST"])
async def flush_cache(request: Request) -> PlainTextResponse:
    freed = await _service(request).engine.flush_cache()
    return PlainTextResponse(f"Cache flushed: {freed} cached tokens freed.\n")


@router.get("/model_info")
async def model_info(request: Request) -> JSONResponse:
    return JSONResponse(await _service(request).model_info())


@router.get("/server_info")
async def server_info(request: Request) -> JSONResponse:
    return JSONResponse(await _service(request).server_info())
