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


class EngineUnavailableError(EngineError):
    """A remote engine cannot be reached or dropped a request mid-way (connection refused or
    reset, timeout, process gone): a 503. Carries what was committed before the loss, so the
    request can resume on another engine from there."""

    def __init__(
        self,
        message: str,
        *,
        prompt_ids: list[int] | None = None,
        output_ids: list[int] | None = None,
        output_text: str = "",
    ) -> None:
        super().__init__(message)
        self.prompt_ids = prompt_ids
        self.output_ids = list(output_ids or [])
        self.output_text = output_text  # the text already streamed for output_ids
