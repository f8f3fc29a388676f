"""Operations: `/health` (liveness for probes and load balancers) and `/metrics` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    core = request.app.state.core
    return JSONResponse(
        {
            "status": "ok",
            "model": core.engine.info.model,
            "sessions": len(core.sessions.sessions),
            "running_calls": core.executor.running,
        }
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    core = request.app.state.core
    await core.refresh_metrics()
    return Response(core.metrics.render(), media_type=CONTENT_TYPE_LATEST)
