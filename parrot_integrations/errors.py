"""Typed exceptions of the client SDK.

Every error the server answers (`{"error": {"message", "type", "param", "code"}}`) becomes one
of these, carrying the server's message, HTTP status and error type, so callers can catch a
kind of failure (`except NotFoundError`) or every Parrot failure (`except ParrotError`).
"""

from __future__ import annotations


class ParrotError(Exception):
    """Base of every SDK error. `status_code` and `error_type` are the server's, when it
    answered; `param` names the offending field when the server said which."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_type = error_type
        self.param = param

    def __str__(self) -> str:
        return self.message if self.status_code is None else f"{self.message} ({self.status_code})"


class APIConnectionError(ParrotError):
    """The server could not be reached, or the connection broke mid-response."""


class APITimeoutError(ParrotError, TimeoutError):
    """An HTTP request timed out (also a builtin `TimeoutError`)."""


class AuthenticationError(ParrotError):
    """401/403: missing or wrong API key (`api_key=` or `PARROT_API_KEY`)."""


class NotFoundError(ParrotError):
    """404: unknown or expired session, variable or call."""


class InvalidRequestError(ParrotError):
    """400/422 from the server; also raised by the SDK itself, before any request, for a bad
    template, bad sampling options or bad arguments."""


class ConflictError(ParrotError):
    """409: the request clashes with the server's state (an id already used, a variable that
    already has a value or a producer)."""


class OverloadedError(ParrotError):
    """429/503 after the client's retries: the server is at a limit or its queue is full."""


class ServerError(ParrotError):
    """5xx: the server failed."""


class VariableFailedError(ParrotError):
    """`get()`/`stream()` on a variable whose producer failed or was cancelled; the message is
    the server's reason."""

    def __init__(self, message: str, *, variable_id: str) -> None:
        super().__init__(message, error_type="variable_failed")
        self.variable_id = variable_id


class GetTimeoutError(APITimeoutError):
    """The variable was still pending when the `timeout` given to `get()` passed. A subclass of
    `APITimeoutError`, hence of `TimeoutError`; the variable itself is untouched and may still
    be read later."""

    def __init__(self, message: str, *, variable_id: str) -> None:
        super().__init__(message, error_type="get_timeout")
        self.variable_id = variable_id
