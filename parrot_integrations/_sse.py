"""Server-sent events of the native variable streams and the OpenAI-compatible streams."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from ._error_mapping import error_from_body
from .errors import ServerError
from .protocol.errors import ErrorResponse
from .protocol.native import VariableChunk

ModelT = TypeVar("ModelT", bound=BaseModel)

SSE_DONE = object()  # the `data: [DONE]` sentinel


def _payload(line: str) -> str | object | None:
    """A `data:` line's payload, `SSE_DONE` for `[DONE]`, None for any other line (blank
    separators, comments, `event:` lines)."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    return SSE_DONE if payload == "[DONE]" else payload


def parse_sse_line(line: str) -> VariableChunk | object | None:
    """One line of a variable stream: a chunk, `SSE_DONE`, or None for anything else (a
    chunk's own `error` field says its producer failed)."""
    payload = _payload(line)
    if not isinstance(payload, str):
        return payload
    try:
        return VariableChunk.model_validate_json(payload)
    except ValidationError as exc:
        raise ServerError(f"malformed stream event {payload[:100]!r}") from exc


def parse_openai_sse_line(line: str, cls: type[ModelT]) -> ModelT | object | None:
    """One line of an OpenAI-style stream: a `cls` chunk, `SSE_DONE`, or None for anything
    else. An `{"error": ...}` event (a failure after the 200 was sent) raises its typed
    exception, so a stream never ends silently short."""
    payload = _payload(line)
    if not isinstance(payload, str):
        return payload
    try:
        data = json.loads(payload)
        if isinstance(data, dict) and "error" in data:
            error = ErrorResponse.model_validate(data)
        else:
            return cls.model_validate(data)
    except (ValueError, ValidationError) as exc:  # ValidationError is a ValueError too
        raise ServerError(f"malformed stream event {payload[:100]!r}") from exc
    raise error_from_body(error)
