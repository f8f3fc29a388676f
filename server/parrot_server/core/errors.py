"""Typed errors of the ServeCore (the engine's `InvalidRequestError` serves for bad input).
Each maps to one HTTP status in `error_status.py`."""

from __future__ import annotations

from ..engine.errors import EngineError


class NotFoundError(EngineError, KeyError):
    """An unknown (or expired) session, variable or call: a 404."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "not found"


class ConflictError(EngineError):
    """The request clashes with the current state (an id already used, a variable that already
    has a value or a producer): a 409."""


class LimitExceededError(EngineError):
    """A documented ServeCore limit (sessions, variables, calls) is reached: a 429."""


class PermissionDeniedError(EngineError):
    """The caller's key does not grant this route (an operator route without the admin key):
    a 403."""


class ServerShuttingDownError(EngineError):
    """The server is stopping: new work is refused and unfinished work ends with this: a 503."""
