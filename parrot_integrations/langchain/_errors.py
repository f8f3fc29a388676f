"""SDK errors -> `langchain_core.exceptions`.

Each raised class inherits from both the SDK's typed error and LangChain's `ModelError`
subclass for the same condition (as provider integrations do), so `except ContextOverflowError`
and `except parrot_integrations.InvalidRequestError` both work, and the server's message,
status and error type are kept.

| SDK error                                   | LangChain exception          |
|---------------------------------------------|------------------------------|
| InvalidRequestError, prompt over the window | ContextOverflowError         |
| InvalidRequestError, ConflictError          | ModelInvalidRequestError     |
| AuthenticationError 401 / 403               | ModelAuthenticationError / ModelPermissionDeniedError |
| NotFoundError                               | ModelNotFoundError           |
| OverloadedError (429/503 after retries)     | ModelRateLimitError          |
| APITimeoutError                             | ModelTimeoutError            |
| APIConnectionError                          | ModelConnectionError         |
| ServerError                                 | ModelAPIError                |
| VariableFailedError (a shipped or batched call failed on the server) | ContextOverflowError when its prompt did not fit, else ModelAPIError |
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from langchain_core import exceptions as lc

from .. import errors as sdk


class ParrotContextOverflowError(sdk.InvalidRequestError, lc.ContextOverflowError):
    """The prompt does not fit the model's context window (or the server's KV pool)."""


class ParrotInvalidRequestError(sdk.InvalidRequestError, lc.ModelInvalidRequestError):
    """400: a value the server (or the SDK, before sending) rejected; the message says which."""


class ParrotConflictError(sdk.ConflictError, lc.ModelInvalidRequestError):
    """409: the request clashes with the server's state."""


class ParrotAuthenticationError(sdk.AuthenticationError, lc.ModelAuthenticationError):
    """401: missing or wrong API key."""


class ParrotPermissionDeniedError(sdk.AuthenticationError, lc.ModelPermissionDeniedError):
    """403: the key is not allowed to do this."""


class ParrotNotFoundError(sdk.NotFoundError, lc.ModelNotFoundError):
    """404: unknown model name, or a `session_id` that is closed or expired."""


class ParrotRateLimitError(sdk.OverloadedError, lc.ModelRateLimitError):
    """429/503 after the client's retries: the server is at a limit or its queue is full."""


class ParrotTimeoutError(sdk.APITimeoutError, lc.ModelTimeoutError):
    """An HTTP request timed out (`timeout`)."""


class ParrotConnectionError(sdk.APIConnectionError, lc.ModelConnectionError):
    """The server could not be reached, or the connection broke mid-answer."""


class ParrotAPIError(sdk.ServerError, lc.ModelAPIError):
    """5xx: the server failed."""


class ParrotCallOverflowError(sdk.VariableFailedError, lc.ContextOverflowError):
    """A native call's prompt, known only once its inputs were computed, did not fit."""


class ParrotCallFailedError(sdk.VariableFailedError, lc.ModelAPIError):
    """A native call (of a shipped chain or a batch) failed on the server."""


# What the server says when a prompt cannot fit (server/engine/engine.py, PromptTooLongError).
_OVERFLOW_HINTS = ("context window", "kv slots")


def _mapped_class(err: sdk.ParrotError) -> type[sdk.ParrotError] | None:
    if isinstance(err, sdk.InvalidRequestError):
        text = err.message.lower()
        if any(hint in text for hint in _OVERFLOW_HINTS):
            return ParrotContextOverflowError
        return ParrotInvalidRequestError
    if isinstance(err, sdk.AuthenticationError):
        return ParrotPermissionDeniedError if err.status_code == 403 else ParrotAuthenticationError
    # Order matters only where SDK classes nest (GetTimeoutError is an APITimeoutError).
    for sdk_cls, lc_cls in (
        (sdk.NotFoundError, ParrotNotFoundError),
        (sdk.ConflictError, ParrotConflictError),
        (sdk.OverloadedError, ParrotRateLimitError),
        (sdk.APITimeoutError, ParrotTimeoutError),
        (sdk.APIConnectionError, ParrotConnectionError),
        (sdk.ServerError, ParrotAPIError),
    ):
        if isinstance(err, sdk_cls):
            return lc_cls
    return None


def to_langchain(err: sdk.ParrotError) -> sdk.ParrotError:
    """The same error as a class LangChain code recognises (itself when none fits)."""
    if isinstance(err, lc.ModelError):
        return err
    if isinstance(err, sdk.VariableFailedError):
        overflow = any(hint in err.message.lower() for hint in _OVERFLOW_HINTS)
        failed = ParrotCallOverflowError if overflow else ParrotCallFailedError
        return failed(err.message, variable_id=err.variable_id)
    cls = _mapped_class(err)
    if cls is None:
        return err
    return cls(err.message, status_code=err.status_code, error_type=err.error_type, param=err.param)


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Re-raise SDK errors from the block as their LangChain-recognisable classes."""
    try:
        yield
    except sdk.ParrotError as err:
        mapped = to_langchain(err)
        if mapped is err:
            raise
        raise mapped from err
