"""Operations: `/health` (liveness for probes and load balancers) and `/metrics` (Prometheus)."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .errors import RETRY_AFTER_SECONDS
from .openapi_doc import TEXT

router = APIRouter(tags=["ops"])


@router.get("/health", responses={503: {"description": "no engine is healthy"}})
async def health(request: Request) -> JSONResponse:
    """200 while at least one engine is healthy, else 503 (so a load balancer moves on)."""
    core = request.app.state.core
    engines = await core.engine.engines()
    ok = any(e.healthy for e in engines)
    return JSONResponse(
        {
            "status": "ok" if ok else "unavailable",
            "model": core.engine.info.model,
            "sessions": len(core.sessions.sessions),
            "running_calls": core.executor.running,
            "engines": [dataclasses.asdict(e) for e in engines],
        },
        status_code=200 if ok else 503,
        headers=None if ok else {"Retry-After": str(RETRY_AFTER_SECONDS[503])},
    )


@router.get("/metrics", response_class=PlainTextResponse, responses=TEXT)
async def metrics(request: Request) -> Response:
    core = request.app.state.core
    await core.refresh_metrics()
    return Response(core.metrics.render(), media_type=CONTENT_TYPE_LATEST)
