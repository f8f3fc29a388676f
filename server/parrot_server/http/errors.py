"""One error response for every endpoint: typed exceptions map to a status and OpenAI's body.

FastAPI's default 422 for a malformed body becomes a 400, as OpenAI and vLLM answer. A 429 or
503 says when to retry (`Retry-After`); a 405 lists the methods the path takes (`Allow`).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from parrot_integrations.protocol.errors import ErrorInfo, ErrorResponse

from ..engine.errors import EngineError
from ..error_status import status_of

log = logging.getLogger(__name__)

# Seconds a client should wait before retrying a 429 or a 503 (`Retry-After`). Short: a full
# queue drains and limits free up as requests finish; a client that still fails backs off.
RETRY_AFTER_SECONDS = {429: 1, 503: 1}


def error_response(
    status: int,
    kind: str,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorInfo(message=message, type=kind, param=param, code=status))
    headers = dict(headers or {})
    if status in RETRY_AFTER_SECONDS:
        headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS[status]))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method some route takes on this path: Starlette's 405 names only the first
    route's, and a path here is often served by several (GET and DELETE of a session). Asked
    of the router method by method, whatever its routes are made of."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]
    return ", ".join(allowed)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = (
            f"{where}: {first.get('msg', 'invalid value')}"
            if where
            else first.get("msg", "invalid request")
        )
        return error_response(400, "invalid_request_error", message, where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        return error_response(exc.status_code, kind, str(exc.detail), headers=headers)

    # Typed errors are the client's: answered quietly. A handler on bare Exception runs in
    # Starlette's server-error middleware, which logs and re-raises: only real bugs go there.
    @app.exception_handler(EngineError)
    async def _typed(_: Request, exc: EngineError) -> JSONResponse:
        status, kind = status_of(exc)
        return error_response(status, kind, str(exc))

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s: %s", type(exc).__name__, exc)
        return error_response(500, "server_error", f"internal error: {type(exc).__name__}: {exc}")
