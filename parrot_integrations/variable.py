"""`SemanticVariable`: a future string held by the server (an input set by the client, or an
output a call will write). `get()` / `stream()` are where the client waits."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, Protocol

from . import _http
from ._session_api import SessionRef
from .errors import (
    APIConnectionError,
    GetTimeoutError,
    InvalidRequestError,
    VariableFailedError,
)
from .protocol.native import (
    CallSpec,
    Criteria,
    OutputUsage,
    VariableChunk,
    VariableCreate,
    VariableState,
    VariableStatus,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def new_id(prefix: str) -> str:
    """A fresh variable or call id: a readable prefix (for server logs) and a uuid4."""
    prefix = _UNSAFE.sub("_", prefix)[:48] or "v"
    return f"{prefix}-{uuid.uuid4().hex}"


class PendingProgram(Protocol):
    submitted: bool


class CallTarget:
    """What a semantic function can be called on: `Session`, `AsyncSession` and the program
    builders implement it (in `session.py`)."""

    def _call_session(self) -> SessionRef:
        raise NotImplementedError

    def _pending_program(self) -> PendingProgram | None:
        """The program collecting this call, when calls are collected rather than sent."""
        return None

    def _submit_call(
        self, variables: list[VariableCreate], call: CallSpec
    ) -> Awaitable[None] | None:
        """Send (or collect) one call with the new input variables it needs; an async
        target returns the awaitable that sends it."""
        raise NotImplementedError


# -- variables ----------------------------------------------------------------------------------
class _WaitBudget:
    """Splits a `get(timeout=...)` into server waits of at most `MAX_SERVER_WAIT` seconds."""

    def __init__(self, timeout: float | None) -> None:
        if timeout is not None and timeout < 0:
            raise InvalidRequestError(f"timeout must be >= 0 seconds or None, got {timeout}")
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def next_wait(self) -> float:
        if self.deadline is None:
            return _http.MAX_SERVER_WAIT
        return max(0.0, min(_http.MAX_SERVER_WAIT, self.deadline - time.monotonic()))

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


class SemanticVariable:
    """A future string held by the server: an input set by the client or an output of a
    semantic call. Values never change once set, so a value read once is cached."""

    def __init__(
        self,
        session: SessionRef,
        id: str,
        *,
        producer: str | None = None,
        value: str | None = None,
        program: PendingProgram | None = None,
    ) -> None:
        self.session = session
        self.id = id
        self.producer = producer  # id of the call that writes it (to cancel it, say)
        self._value = value
        self._program = program  # the program builder it was made in, until submitted
        # How the server generated the value (tokens, finish reason, model): known once the
        # value is read; None for a value set by a client.
        self.usage: OutputUsage | None = None

    def __repr__(self) -> str:
        state = "ready" if self._value is not None else "unread"
        return f"SemanticVariable({self.id!r}, {state})"

    @property
    def is_ready(self) -> bool:
        """Whether the value is known locally (no request is made)."""
        return self._value is not None

    def _usable(self, want_async: bool) -> Any:
        if self._program is not None and not self._program.submitted:
            raise InvalidRequestError(
                f"variable {self.id} is part of a program that has not been submitted; read it "
                "after the `with session.program()` block"
            )
        if self.session.is_async != want_async:
            hint = (
                "await v.aget() / v.astream() / v.aset()"
                if self.session.is_async
                else "v.get() / v.stream() / v.set()"
            )
            raise InvalidRequestError(
                f"variable {self.id} belongs to a {type(self.session).__name__}: use {hint}"
            )
        return self.session

    def _settle(self, state: VariableState) -> bool:
        if state.status is VariableStatus.READY:
            self._value = state.value or ""
            self.usage = state.usage
            return True
        if state.status is VariableStatus.FAILED:
            raise VariableFailedError(state.error or "its producer failed", variable_id=self.id)
        return False

    def _timed_out(self, budget: _WaitBudget) -> GetTimeoutError:
        return GetTimeoutError(
            f"variable {self.id} is still pending after {budget.timeout:g} s", variable_id=self.id
        )

    # -- sync -----------------------------------------------------------------------------------
    def get(self, criteria: Criteria | str = Criteria.LATENCY, timeout: float | None = None) -> str:
        """Wait for the value. `criteria` tells the server how urgent the calls producing it
        are; `timeout` (seconds, None: forever) raises GetTimeoutError. Raises
        VariableFailedError when its producer failed."""
        session = self._usable(want_async=False)
        if self._value is not None:
            return self._value
        budget = _WaitBudget(timeout)
        while True:
            state = session.client.get_variable(
                session.id, self.id, criteria=criteria, wait=budget.next_wait()
            )
            if self._settle(state):
                return self._value  # type: ignore[return-value]
            if budget.expired():
                raise self._timed_out(budget)

    def stream(self, criteria: Criteria | str = Criteria.LATENCY) -> Iterator[str]:
        """The value's text as it is generated (deltas); raises VariableFailedError if the
        producer fails midway."""
        session = self._usable(want_async=False)
        if self._value is not None:
            yield self._value
            return
        parts: list[str] = []
        for chunk in session.client.stream_variable(session.id, self.id, criteria=criteria):
            if self._take(chunk, parts):
                yield chunk.delta
            if chunk.done:
                return
        raise _stream_cut(self.id)

    def set(self, value: str) -> None:
        """Give an input variable its value (once)."""
        session = self._usable(want_async=False)
        self._settle(session.client.set_variable(session.id, self.id, value))

    # -- async ----------------------------------------------------------------------------------
    async def aget(
        self, criteria: Criteria | str = Criteria.LATENCY, timeout: float | None = None
    ) -> str:
        """As `get`, awaited."""
        session = self._usable(want_async=True)
        if self._value is not None:
            return self._value
        budget = _WaitBudget(timeout)
        while True:
            state = await session.client.get_variable(
                session.id, self.id, criteria=criteria, wait=budget.next_wait()
            )
            if self._settle(state):
                return self._value  # type: ignore[return-value]
            if budget.expired():
                raise self._timed_out(budget)

    async def astream(self, criteria: Criteria | str = Criteria.LATENCY) -> AsyncIterator[str]:
        """As `stream`, as an async iterator."""
        session = self._usable(want_async=True)
        if self._value is not None:
            yield self._value
            return
        parts: list[str] = []
        async for chunk in session.client.stream_variable(session.id, self.id, criteria=criteria):
            if self._take(chunk, parts):
                yield chunk.delta
            if chunk.done:
                return
        raise _stream_cut(self.id)

    async def aset(self, value: str) -> None:
        """As `set`, awaited."""
        session = self._usable(want_async=True)
        self._settle(await session.client.set_variable(session.id, self.id, value))

    def _take(self, chunk: VariableChunk, parts: list[str]) -> bool:
        """Account one stream chunk; True when its delta is to be yielded."""
        if chunk.error is not None:
            raise VariableFailedError(chunk.error, variable_id=self.id)
        parts.append(chunk.delta)
        if chunk.done:
            self._value, self.usage = "".join(parts), chunk.usage
        return bool(chunk.delta)


def _stream_cut(variable_id: str) -> APIConnectionError:
    return APIConnectionError(f"the stream of variable {variable_id} ended before it was done")
