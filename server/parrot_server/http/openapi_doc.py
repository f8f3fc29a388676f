"""What the OpenAPI document (`/openapi.json`) says a route answers besides its success: the
error statuses it can return, each with the one error body (`ErrorResponse`), and the media types
of routes that answer text or server-sent events.

FastAPI documents a 422 for every route with parameters; this server answers 400 instead
(`errors.py`), and a `default` entry (any other status, 500 included, has the same body) keeps
the 422 out of the document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from parrot_integrations.protocol.errors import ErrorResponse

from .errors import RETRY_AFTER_SECONDS

_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer"},
    }
}

_WHY: dict[int, str] = {
    400: "invalid request: a malformed body or parameter, a value out of range, text that is "
    "not valid Unicode, a prompt that does not fit the context window",
    401: "missing or wrong API key (only when the server has keys)",
    403: "an operator route called without the admin key",
    404: "unknown or expired session, variable, call or model",
    408: "the request body did not arrive in time",
    409: "the request clashes with the current state (an id in use, a value already set)",
    413: "the request body is larger than the server accepts",
    429: "a documented limit is reached (sessions, variables, calls, a tenant's quota)",
    503: "the engine is overloaded (its queue is full), unavailable, or shutting down",
}

BODY = (400, 408, 413)  # what any route reading a JSON body may answer before it runs


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that answers `codes` (and, like every route, a 500 on a bug)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted(set(codes)):
        out[code] = {"model": ErrorResponse, "description": _WHY[code]}
        if code in RETRY_AFTER_SECONDS:
            out[code]["headers"] = _RETRY_AFTER
    out["default"] = {"model": ErrorResponse, "description": "any other error (500: a bug)"}
    return out


# One server-sent event (OpenAPI 3.2's `itemSchema`, as FastAPI writes it): each of ours has a
# `data` line, JSON or the closing `[DONE]`.
_EVENT = {
    "type": "object",
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
    "required": ["data"],
}


def event_stream(model: type[BaseModel] | None = None) -> dict[int | str, dict[str, Any]]:
    """A 200 that is `model` as JSON, or (`stream: true`, or always when `model` is None)
    server-sent events: `data: <JSON>` lines ending with `data: [DONE]`."""
    ok: dict[str, Any] = {
        "description": "the response; with `stream: true`, server-sent events"
        if model is not None
        else "server-sent events: `data: <JSON>` lines, then `data: [DONE]`",
        "content": {"text/event-stream": {"itemSchema": _EVENT}},
    }
    if model is not None:
        ok["model"] = model
    return {200: ok}


TEXT = {
    200: {"description": "plain text", "content": {"text/plain": {"schema": {"type": "string"}}}}
}
