"""Builds the FastAPI apps: `create_app` (ServeCore: native, OpenAI-compatible and ops routes,
plus SGLang's routes of the embedded engine) and `create_engine_app` (`parrot engine`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

from fastapi import FastAPI

from ..core.config import ServeConfig
from ..core.serve_core import ServeCore
from ..engine.async_engine import AsyncEngine
from ..engine_service import EngineService
from ..native_service import NativeService
from .auth import install_auth
from .body_limit import install_body_limit
from .engine_routes import health_router as engine_health_router
from .engine_routes import router as engine_router
from .errors import install_error_handlers
from .native_routes import router as native_router
from .openai_routes import router as openai_router
from .ops_routes import router as ops_router

VERSION = "0.1.0"


def create_engine_app(
    engine: AsyncEngine,
    max_request_bytes: int = ServeConfig.max_request_bytes,
    request_body_timeout_seconds: float = ServeConfig.request_body_timeout_seconds,
) -> FastAPI:
    """One engine on SGLang's native runtime protocol (body limits as `ServeConfig`'s)."""
    loaded = engine.engine.loaded

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await engine.shutdown()  # graceful: in-flight requests end as aborted, never hang

    app = FastAPI(title="Parrot engine", version=VERSION, lifespan=lifespan)
    app.state.engine_service = EngineService(engine, loaded.name, str(loaded.path))
    install_error_handlers(app)
    install_body_limit(app, max_request_bytes, request_body_timeout_seconds)
    app.include_router(engine_health_router)
    app.include_router(engine_router)
    return app


def create_app(
    core: ServeCore,
    engine: AsyncEngine | None = None,
    around: Callable[[], AbstractAsyncContextManager] | None = None,
) -> FastAPI:
    """The ServeCore app. With the embedded `engine`, its SGLang routes (`/generate`, ...) are
    served too, for clients that speak SGLang's protocol. `around` wraps the core's life (entered
    before it starts, left after it stops): for example the engine processes it drives."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with around() if around is not None else nullcontext():
            await core.start()
            try:
                yield
            finally:
                await core.shutdown()  # sessions cancelled, in-flight calls aborted, engines off

    app = FastAPI(title="Parrot", version=VERSION, lifespan=lifespan)
    app.state.core = core
    app.state.native_service = NativeService(core)
    install_error_handlers(app)
    install_body_limit(app, core.config.max_request_bytes, core.config.request_body_timeout_seconds)
    install_auth(app, core.config.api_key)
    app.include_router(ops_router)
    app.include_router(native_router)
    app.include_router(openai_router)
    if engine is not None:
        loaded = engine.engine.loaded
        app.state.engine_service = EngineService(engine, loaded.name, str(loaded.path))
        app.include_router(engine_router)
    return app
