"""Sessions and program builders: where semantic functions run.

A session owns variables and calls on the server and frees them when closed (or when idle
past its TTL). A program builder collects calls and input variables and sends them as one
`Program` when its block exits, so the server sees (and checks) the whole graph at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Generator
from typing import Any, ClassVar

from pydantic import ValidationError

from . import _http
from ._session_api import AsyncSessionClient, SessionClient
from .errors import InvalidRequestError, NotFoundError
from .protocol.native import (
    CallInfo,
    CallSpec,
    Program,
    ProgramAccepted,
    SessionInfo,
    VariableCreate,
)
from .variable import CallTarget, SemanticVariable, new_id


def _new_variable(value: str | None, name: str | None) -> VariableCreate:
    try:
        return VariableCreate(id=new_id(name or "var"), value=value)
    except ValidationError as exc:
        raise InvalidRequestError(f"variable: {_http.validation_message(exc)}") from None


class _SessionBase(CallTarget):
    is_async: ClassVar[bool]

    def __init__(self, session_id: str | None, ttl_seconds: float | None) -> None:
        self._id = session_id
        self.ttl_seconds = ttl_seconds
        self.closed = False

    @property
    def id(self) -> str:
        if self._id is None:
            raise InvalidRequestError(
                "the session is not open yet: `async with client.session() as s:` or "
                "`s = await client.session()`"
            )
        return self._id

    def _call_session(self) -> _SessionBase:
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._id!r}{', closed' if self.closed else ''})"


class Session(_SessionBase):
    """A server session driven by a `ParrotClient`; `with client.session() as s:` deletes it
    (cancelling its calls, freeing its variables) on exit."""

    is_async = False

    def __init__(self, client: SessionClient, info: SessionInfo) -> None:
        super().__init__(info.session_id, info.ttl_seconds)
        self.client = client

    def variable(self, value: str | None = None, name: str | None = None) -> SemanticVariable:
        """Create an input variable on the server, with `value` now or later via `set()`.
        `name` prefixes its id (readable in server logs)."""
        var = _new_variable(value, name)
        self.client.create_variable(self.id, var.id, value)
        return SemanticVariable(self, var.id, value=value)

    def program(self) -> ProgramBuilder:
        """`with s.program() as p:` collects `fn(p, ...)` calls and sends them as one Program
        when the block exits without an exception."""
        return ProgramBuilder(self)

    def call(self, call_id: str) -> CallInfo:
        return self.client.get_call(self.id, call_id)

    def cancel(self, call_id: str) -> CallInfo:
        """Cancel a call (e.g. `v.producer`); its outputs and their consumers fail."""
        return self.client.cancel_call(self.id, call_id)

    def info(self) -> SessionInfo:
        return self.client.get_session(self.id)

    def close(self) -> None:
        """Delete the session on the server (once; an already expired one is fine)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(NotFoundError):  # already expired
            self.client.delete_session(self.id)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit_call(self, variables: list[VariableCreate], call: CallSpec) -> None:
        # String inputs travel with the call as a one-call program: still one request.
        if variables:
            self.client.submit_program(self.id, Program(variables=variables, calls=[call]))
        else:
            self.client.submit_call(self.id, call)


class AsyncSession(_SessionBase):
    """A server session driven by an `AsyncParrotClient`, created when opened: `async with
    client.session() as s:` (deleted on exit) or `s = await client.session()`."""

    is_async = True

    def __init__(self, client: AsyncSessionClient, ttl_seconds: float | None = None) -> None:
        super().__init__(None, ttl_seconds)
        self.client = client

    async def open(self) -> AsyncSession:
        if self._id is None:
            info = await self.client.create_session(self.ttl_seconds)
            self._id, self.ttl_seconds = info.session_id, info.ttl_seconds
        return self

    def __await__(self) -> Generator[Any, None, AsyncSession]:
        return self.open().__await__()

    async def variable(self, value: str | None = None, name: str | None = None) -> SemanticVariable:
        var = _new_variable(value, name)
        await self.client.create_variable(self.id, var.id, value)
        return SemanticVariable(self, var.id, value=value)

    def program(self) -> AsyncProgramBuilder:
        """`async with s.program() as p:` collects calls, sent as one Program on exit."""
        return AsyncProgramBuilder(self)

    async def call(self, call_id: str) -> CallInfo:
        return await self.client.get_call(self.id, call_id)

    async def cancel(self, call_id: str) -> CallInfo:
        return await self.client.cancel_call(self.id, call_id)

    async def info(self) -> SessionInfo:
        return await self.client.get_session(self.id)

    async def aclose(self) -> None:
        if self.closed or self._id is None:
            return
        self.closed = True
        with contextlib.suppress(NotFoundError):  # already expired
            await self.client.delete_session(self._id)

    async def __aenter__(self) -> AsyncSession:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _submit_call(self, variables: list[VariableCreate], call: CallSpec) -> Awaitable[None]:
        sid = self.id  # an unopened session fails at the call, not at the await

        async def send() -> None:
            if variables:
                await self.client.submit_program(sid, Program(variables=variables, calls=[call]))
            else:
                await self.client.submit_call(sid, call)

        return send()


class _ProgramCollector(CallTarget):
    """Collects variables and calls; the sync and async builders differ only in sending."""

    def __init__(self, session: Session | AsyncSession) -> None:
        self.session = session
        self.variables: list[VariableCreate] = []
        self.calls: list[CallSpec] = []
        self.submitted = False
        self.accepted: ProgramAccepted | None = None  # the server's answer, once sent

    def _check_open(self) -> None:
        if self.submitted:
            raise InvalidRequestError("this program was already submitted; start a new one")

    def variable(self, value: str | None = None, name: str | None = None) -> SemanticVariable:
        """A new input variable sent with the program (no request now)."""
        self._check_open()
        var = _new_variable(value, name)
        self.variables.append(var)
        return SemanticVariable(self.session, var.id, value=value, program=self)

    def program(self) -> Program:
        """What will be (or was) sent."""
        return Program(variables=self.variables, calls=self.calls)

    def _call_session(self) -> Session | AsyncSession:
        return self.session

    def _pending_program(self) -> _ProgramCollector:
        return self

    def _submit_call(self, variables: list[VariableCreate], call: CallSpec) -> None:
        self._check_open()
        self.variables.extend(variables)
        self.calls.append(call)

    def _empty(self) -> bool:
        return not self.variables and not self.calls


class ProgramBuilder(_ProgramCollector):
    session: Session

    def __enter__(self) -> ProgramBuilder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None or self.submitted:
            return
        if not self._empty():
            self.accepted = self.session.client.submit_program(self.session.id, self.program())
        self.submitted = True


class AsyncProgramBuilder(_ProgramCollector):
    session: AsyncSession

    async def __aenter__(self) -> AsyncProgramBuilder:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None or self.submitted:
            return
        if not self._empty():
            program = self.program()
            self.accepted = await self.session.client.submit_program(self.session.id, program)
        self.submitted = True
