"""Builds the FastAPI apps: `create_app` (ServeCore: native, OpenAI-compatible, tokenize and ops
routes, plus SGLang's routes of the embedded engine) and `create_engine_app` (`parrot engine`)."""

from __future__ import annotations

from contextlib import asynccontextmanager, nullcontext

from fastapi import FastAPI

from ..core.config import ServeConfig
from ..core.serve_core import ServeCore
from ..core.tenants import KeyTable
from ..embedding_service import EmbeddingService
from ..engine.async_engine import AsyncEngine
from ..engine_processes import EngineProcesses
from ..engine_service import EngineService
from ..native_service import NativeService
from ..openai_service import OpenAIService
from ..tokenize_service import TokenizeService
from .auth import install_auth
from .body_limit import install_body_limit
from .draining import install_draining
from .embedding_routes import router as embedding_router
from .engine_routes import health_router as engine_health_router
from .engine_routes import router as engine_router
from .errors import install_error_handlers
from .native_routes import router as native_router
from .openai_routes import router as openai_router
from .ops_routes import router as ops_router
from .request_metrics import install_request_metrics
from .tokenize_routes import router as tokenize_router

VERSION = "0.1.0"


def create_engine_app(
    engine: AsyncEngine,
    keys: KeyTable | None = None,
    max_request_bytes: int = ServeConfig.max_request_bytes,
    request_body_timeout_seconds: float = ServeConfig.request_body_timeout_seconds,
) -> FastAPI:
    """One engine on SGLang's native runtime protocol; `keys` as for `create_app`, body limits
    as `ServeConfig`'s."""
    loaded = engine.engine.loaded

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await engine.shutdown()  # graceful: in-flight requests end as aborted, never hang

    app = FastAPI(title="Parrot engine", version=VERSION, lifespan=lifespan)
    app.state.engine_service = EngineService(engine, loaded.name, str(loaded.path))
    install_error_handlers(app)
    install_body_limit(app, max_request_bytes, request_body_timeout_seconds)
    install_auth(app, keys or KeyTable())  # added after: checked before the body is read
    app.include_router(engine_health_router)
    app.include_router(engine_router)
    return app


def create_app(
    core: ServeCore,
    engine: AsyncEngine | None = None,
    processes: EngineProcesses | None = None,
    keys: KeyTable | None = None,
    embeddings: EmbeddingService | None = None,
) -> FastAPI:
    """The ServeCore app. With the embedded `engine`, its SGLang routes (`/generate`, ...) are
    served too, for clients that speak SGLang's protocol. `processes`, the local engine
    processes the core drives, run around the core's life (started before it, stopped after).
    `keys`: who may call (an empty table, the default, leaves the server open). `embeddings`:
    the embedding model's service (`/v1/embeddings`; None: that route is a 404)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with processes.running() if processes is not None else nullcontext():
            await core.start()
            try:
                yield
            finally:
                await core.shutdown()  # sessions cancelled, in-flight calls aborted, engines off

    app = FastAPI(title="Parrot", version=VERSION, lifespan=lifespan)
    app.state.core = core
    app.state.engine_processes = processes  # /health adds their pids and restart counts
    app.state.native_service = NativeService(core)
    app.state.openai_service = openai = OpenAIService(
        core.engine, core.metrics, core.sessions, core.models
    )
    core.stop_hooks.append(openai.stop_all)
    # Over the same OpenAIService: a chat is counted as /v1 renders it.
    app.state.tokenize_service = TokenizeService(openai, core.config.max_value_chars)
    install_error_handlers(app)
    # The last added runs first: counting, draining, the key check, then the body limit.
    install_body_limit(app, core.config.max_request_bytes, core.config.request_body_timeout_seconds)
    install_auth(app, keys or KeyTable())
    install_draining(app, core)
    install_request_metrics(app, core.metrics)  # outermost: counts every answer
    app.include_router(ops_router)
    app.include_router(native_router)
    app.include_router(openai_router)
    app.include_router(tokenize_router)
    app.state.embedding_service = embeddings
    app.include_router(embedding_router)
    if embeddings is not None:
        core.models.other_cards.append(embeddings.card(core.models.created))
        core.stop_hooks.append(embeddings.worker.stop)
    if engine is not None:
        loaded = engine.engine.loaded
        app.state.engine_service = service = EngineService(
            engine, loaded.name, str(loaded.path), core.tenant_load, core.metrics
        )
        core.stop_hooks.append(service.stop_all)
        app.include_router(engine_router)
    return app
