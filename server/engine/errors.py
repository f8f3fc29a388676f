"""Typed errors of the embedded engine. The server maps each class to one HTTP status."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidRequestError(EngineError, ValueError):
    """The request itself is wrong (bad sampling value, empty prompt, ...): a 400."""


class PromptTooLongError(InvalidRequestError):
    """Prompt (plus what it asks to generate) does not fit the context window or the KV pool."""


class ContextNotFoundError(EngineError, KeyError):
    """A context id that was never filled or is already freed."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "context not found"


class ContextBusyError(EngineError):
    """A context already has a fill or generate in flight; they run one at a time."""


class EngineOverloadedError(EngineError):
    """The waiting queue is at its limit (`EngineConfig.max_queued_requests`): retry later (503)."""


class RequestAbortedError(EngineError):
    """The request was cancelled (abort, context freed, engine shut down)."""
