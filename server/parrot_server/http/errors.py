"""One error response for every endpoint: typed exceptions map to a status and OpenAI's body.

FastAPI's default 422 for a malformed body becomes a 400, as OpenAI and vLLM answer.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from parrot_integrations.protocol.errors import ErrorInfo, ErrorResponse

from ..engine.errors import EngineError
from ..error_status import status_of

log = logging.getLogger(__name__)


def error_response(status: int, kind: str, message: str, param: str | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorInfo(message=message, type=kind, param=param, code=status))
    return JSONResponse(body.model_dump(), status_code=status)


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
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, kind, str(exc.detail))

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
