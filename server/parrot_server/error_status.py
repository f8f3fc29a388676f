"""Which HTTP status and OpenAI error type each typed error means. Shared by the HTTP error
handlers and by services that report errors inside a stream (after the status was sent)."""

from __future__ import annotations

from .core.errors import (
    ConflictError,
    LimitExceededError,
    NotFoundError,
    PermissionDeniedError,
    ServerShuttingDownError,
)
from .engine.errors import (
    ContextBusyError,
    ContextNotFoundError,
    EngineOverloadedError,
    EngineUnavailableError,
    InvalidRequestError,
    RequestAbortedError,
)

# Most specific first: the first matching class decides.
_STATUS: list[tuple[type[Exception], int, str]] = [
    (InvalidRequestError, 400, "invalid_request_error"),
    (ContextNotFoundError, 404, "not_found_error"),
    (NotFoundError, 404, "not_found_error"),
    (PermissionDeniedError, 403, "permission_error"),
    (ConflictError, 409, "conflict_error"),
    (LimitExceededError, 429, "rate_limit_error"),
    (ContextBusyError, 409, "conflict_error"),
    (EngineOverloadedError, 503, "overloaded_error"),
    (ServerShuttingDownError, 503, "unavailable_error"),
    (EngineUnavailableError, 503, "engine_unavailable_error"),
    (RequestAbortedError, 499, "aborted_error"),
]


def status_of(exc: Exception) -> tuple[int, str]:
    """(HTTP status, error type) of `exc`; 500 / server_error for anything untyped."""
    for cls, status, kind in _STATUS:
        if isinstance(exc, cls):
            return status, kind
    return 500, "server_error"
