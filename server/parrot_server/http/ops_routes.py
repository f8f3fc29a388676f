"""Operations: `/health` (liveness for probes and load balancers) and `/metrics` (Prometheus)."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .auth import require_admin

router = APIRouter(tags=["ops"])


@router.get("/health")
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
    )


@router.get("/metrics", dependencies=[Depends(require_admin)])
async def metrics(request: Request) -> Response:
    core = request.app.state.core
    await core.refresh_metrics()
    return Response(core.metrics.render(), media_type=CONTENT_TYPE_LATEST)
