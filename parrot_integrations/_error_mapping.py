"""HTTP responses and transport failures -> the SDK's typed exceptions."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from .errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    ParrotError,
    ServerError,
)
from .protocol.errors import ErrorResponse


def _error_class(status: int) -> type[ParrotError]:
    if status in (400, 422):
        return InvalidRequestError
    if status in (401, 403):
        return AuthenticationError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status in (429, 503):
        return OverloadedError
    if status in (408, 504):
        return APITimeoutError
    return ServerError if status >= 500 else ParrotError


def error_from_response(response: httpx.Response) -> ParrotError:
    """The typed exception for an error response (its body must have been read)."""
    status = response.status_code
    try:
        info = ErrorResponse.model_validate_json(response.content).error
        message, kind, param = info.message, info.type, info.param
    except ValidationError:  # not our error body (a proxy's page, say): keep its text
        message = response.text.strip()[:500] or response.reason_phrase or f"HTTP {status}"
        kind, param = None, None
    return _error_class(status)(message, status_code=status, error_type=kind, param=param)


def error_from_body(error: ErrorResponse, default_status: int = 500) -> ParrotError:
    """The typed exception for an error sent as an event inside a stream (the HTTP status was
    already 200; the event's `code` carries the real one)."""
    info = error.error
    status = info.code or default_status
    return _error_class(status)(
        info.message, status_code=status, error_type=info.type, param=info.param
    )


def error_from_transport(error: httpx.TransportError) -> ParrotError:
    """The typed exception for a failure below HTTP (connect, read, timeouts)."""
    if isinstance(error, httpx.TimeoutException):
        return APITimeoutError(f"request timed out: {type(error).__name__}: {error}")
    return APIConnectionError(f"connection failed: {type(error).__name__}: {error}")
