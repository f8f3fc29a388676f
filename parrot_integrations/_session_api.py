"""What sessions and their variables call on a client, and what a variable knows of its session.

`Session` / `AsyncSession` are written against `SessionClient` / `AsyncSessionClient` (the
native-API methods `ParrotClient` / `AsyncParrotClient` have), and `SemanticVariable` against
`SessionRef`: the modules that make sessions and variables need not be imported by them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Protocol

from .protocol.native import (
    CallInfo,
    CallSpec,
    Criteria,
    Program,
    ProgramAccepted,
    SessionInfo,
    VariableChunk,
    VariableState,
)


class SessionClient(Protocol):
    """The native API as `ParrotClient` offers it."""

    def create_session(self, ttl_seconds: float | None = None) -> SessionInfo: ...
    def get_session(self, session_id: str) -> SessionInfo: ...
    def delete_session(self, session_id: str) -> None: ...
    def create_variable(
        self, session_id: str, variable_id: str, value: str | None = None
    ) -> VariableState: ...
    def set_variable(self, session_id: str, variable_id: str, value: str) -> VariableState: ...
    def get_variable(
        self,
        session_id: str,
        variable_id: str,
        *,
        criteria: Criteria | str | None = None,
        wait: float | None = None,
    ) -> VariableState: ...
    def stream_variable(
        self, session_id: str, variable_id: str, *, criteria: Criteria | str | None = None
    ) -> Iterator[VariableChunk]: ...
    def submit_call(self, session_id: str, call: CallSpec) -> CallInfo: ...
    def submit_program(self, session_id: str, program: Program) -> ProgramAccepted: ...
    def get_call(self, session_id: str, call_id: str) -> CallInfo: ...
    def cancel_call(self, session_id: str, call_id: str) -> CallInfo: ...


class AsyncSessionClient(Protocol):
    """The native API as `AsyncParrotClient` offers it."""

    async def create_session(self, ttl_seconds: float | None = None) -> SessionInfo: ...
    async def get_session(self, session_id: str) -> SessionInfo: ...
    async def delete_session(self, session_id: str) -> None: ...
    async def create_variable(
        self, session_id: str, variable_id: str, value: str | None = None
    ) -> VariableState: ...
    async def set_variable(
        self, session_id: str, variable_id: str, value: str
    ) -> VariableState: ...
    async def get_variable(
        self,
        session_id: str,
        variable_id: str,
        *,
        criteria: Criteria | str | None = None,
        wait: float | None = None,
    ) -> VariableState: ...
    def stream_variable(
        self, session_id: str, variable_id: str, *, criteria: Criteria | str | None = None
    ) -> AsyncIterator[VariableChunk]: ...
    async def submit_call(self, session_id: str, call: CallSpec) -> CallInfo: ...
    async def submit_program(self, session_id: str, program: Program) -> ProgramAccepted: ...
    async def get_call(self, session_id: str, call_id: str) -> CallInfo: ...
    async def cancel_call(self, session_id: str, call_id: str) -> CallInfo: ...


class SessionRef(Protocol):
    """A session as its variables see it: its id, its client, and which of the two it has."""

    is_async: bool

    @property
    def id(self) -> str: ...
    @property
    def client(self) -> SessionClient | AsyncSessionClient: ...
