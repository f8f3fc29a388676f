"""Operations: `/health` (liveness for probes and load balancers) and `/metrics` (Prometheus)."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .auth import require_admin
from .errors import RETRY_AFTER_SECONDS
from .openapi_doc import TEXT

router = APIRouter(tags=["ops"])


@router.get("/health", responses={503: {"description": "no engine is healthy"}})
async def health(request: Request) -> JSONResponse:
    """`ok` when every engine is healthy; `degraded` when only some are, still 200 so a load
    balancer keeps sending (the healthy ones serve every request); `unavailable`, 503, when none
    is (so a load balancer moves on). Local engine processes also show their pid and restarts.
    The embedding model, served beside the chat engines and loaded in the background, shows
    whether its load is done (it does not change `status`: chat is served meanwhile)."""
    core = request.app.state.core
    engines = [dataclasses.asdict(e) for e in await core.engine.engines()]
    processes = request.app.state.engine_processes
    if processes is not None:
        local = processes.status()
        for e in engines:
            e.update(local.get(e["name"], {}))
    healthy = sum(e["healthy"] for e in engines)
    status = "ok" if healthy == len(engines) else "degraded" if healthy else "unavailable"
    body = {
        "status": status,
        "model": core.engine.info.model,
        "sessions": len(core.sessions.sessions),
        "running_calls": core.executor.running,
        "engines": engines,
    }
    embeddings = request.app.state.embedding_service
    if embeddings is not None:
        body["embeddings"] = embeddings.health()
    return JSONResponse(
        body,
        status_code=503 if status == "unavailable" else 200,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS[503])} if status == "unavailable" else None,
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses=TEXT,
    dependencies=[Depends(require_admin)],
)
async def metrics(request: Request) -> Response:
    core = request.app.state.core
    await core.refresh_metrics()
    return Response(core.metrics.render(), media_type=CONTENT_TYPE_LATEST)
