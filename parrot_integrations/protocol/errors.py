"""The one error body every Parrot endpoint returns (OpenAI's shape)."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorInfo(BaseModel):
    message: str
    type: str  # e.g. "invalid_request_error", "not_found_error", "overloaded_error"
    param: str | None = None
    code: int | None = None  # the HTTP status


class ErrorResponse(BaseModel):
    error: ErrorInfo
