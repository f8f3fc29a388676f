"""Builds the FastAPI app around a running engine."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from ..engine.async_engine import AsyncEngine
from ..engine_service import EngineService
from .engine_routes import router as engine_router
from .errors import install_error_handlers


def create_app(engine: AsyncEngine) -> FastAPI:
    loaded = engine.engine.loaded

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await engine.shutdown()  # graceful: in-flight requests end as aborted, never hang

    app = FastAPI(title="Parrot", version="0.1.0", lifespan=lifespan)
    app.state.engine_service = EngineService(engine, loaded.name, str(loaded.path))
    install_error_handlers(app)
    app.include_router(engine_router)
    return app
