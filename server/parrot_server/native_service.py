"""Parrot's native API (`/api/v1`): sessions, variables, calls and programs, over the ServeCore.
The routes in `http/native_routes.py` only parse and call these methods."""

from __future__ import annotations

from collections.abc import AsyncIterator

from parrot_integrations.protocol.native import (
    CallInfo,
    CallSpec,
    Criteria,
    Program,
    ProgramAccepted,
    SessionInfo,
    VariableChunk,
    VariableCreate,
    VariableState,
    VariableStatus,
)

from .core.call_prompt import render_prompt
from .core.errors import ConflictError, NotFoundError, ServerShuttingDownError
from .core.executor import to_sampling_params
from .core.graph import Call, Plan
from .core.objective import deduce, mark
from .core.serve_core import ServeCore
from .core.session import Session
from .core.tenants import Tenant
from .engine.errors import PromptTooLongError
from .engine.grammar_text import check_constraint


class NativeService:
    def __init__(self, core: ServeCore) -> None:
        self.core = core
        self.sessions = core.sessions
        self.executor = core.executor

    # -- sessions -------------------------------------------------------------------------------
    def create_session(self, tenant: Tenant, ttl: float | None) -> SessionInfo:
        return self.sessions.create(ttl, tenant).info()

    def session_info(self, tenant: Tenant, sid: str) -> SessionInfo:
        return self.sessions.get(sid, tenant).info()

    def close_session(self, tenant: Tenant, sid: str) -> None:
        self.sessions.close(sid, tenant=tenant)

    # -- variables ------------------------------------------------------------------------------
    def create_variable(self, tenant: Tenant, sid: str, spec: VariableCreate) -> VariableState:
        session = self.sessions.get(sid, tenant)
        session.graph.add(Program(variables=[spec]))
        return session.graph.variables[spec.id].state()

    def set_variable(self, tenant: Tenant, sid: str, var_id: str, value: str) -> VariableState:
        session = self.sessions.get(sid, tenant)
        var = self._variable(session, var_id)
        if var.producer is not None:
            raise ConflictError(f"variable {var_id!r} is written by call {var.producer!r}")
        if not var.pending:
            raise ConflictError(f"variable {var_id!r} already has a value")
        session.graph.set_value(var, value)
        self.executor.variable_settled(session, var)
        return var.state()

    async def get_variable(
        self, tenant: Tenant, sid: str, var_id: str, criteria: Criteria | None, timeout: float
    ) -> VariableState:
        session = self.sessions.get(sid, tenant)
        var = self._variable(session, var_id)
        self._read_with(session, var_id, criteria)
        await var.wait(min(timeout, self.core.config.max_get_wait_seconds))
        if self.core.draining and var.status is VariableStatus.FAILED:
            raise ServerShuttingDownError(f"variable {var_id!r}: {var.error}")
        session.touch()
        return var.state()

    async def stream_variable(
        self, tenant: Tenant, sid: str, var_id: str, criteria: Criteria | None
    ) -> AsyncIterator[VariableChunk]:
        session = self.sessions.get(sid, tenant)
        var = self._variable(session, var_id)
        self._read_with(session, var_id, criteria)

        async def chunks() -> AsyncIterator[VariableChunk]:
            async for delta in var.stream():
                session.touch()
                yield VariableChunk(id=var_id, delta=delta)
            yield VariableChunk(id=var_id, done=True, error=var.error, usage=var.usage)

        return chunks()

    def _read_with(self, session: Session, var_id: str, criteria: Criteria | None) -> None:
        if criteria is not None:
            changed = mark(session.graph, var_id, criteria)
            self.executor.reprioritize(session, changed)

    @staticmethod
    def _variable(session: Session, var_id: str):
        var = session.graph.variables.get(var_id)
        if var is None:
            raise NotFoundError(f"variable {var_id!r} not found in session {session.id!r}")
        return var

    # -- calls and programs ---------------------------------------------------------------------
    async def submit(self, tenant: Tenant, sid: str, program: Program) -> ProgramAccepted:
        session = self.sessions.get(sid, tenant)
        self.core.tenant_load.admit(tenant, len(program.calls))
        for spec in program.calls:  # sampling values the engine would refuse: 400 up front
            for binding in spec.outputs.values():
                check_constraint(to_sampling_params(binding.sampling))
        graph = session.graph
        plan, version = graph.prepare(program), graph.version
        prompts = await self._measure_prompts(plan)
        if graph.version != version:  # another request changed the graph while we measured
            plan = graph.prepare(program)
        calls = graph.commit(plan)
        for call in calls:  # the executor submits these ids rather than tokenize again
            call.prompt_ids = prompts.get(call.id)
        deduce(session.graph, calls)
        self.executor.submitted(session, calls)
        return ProgramAccepted(
            session_id=sid,
            calls=[c.info() for c in calls],
            variables=[v.id for v in program.variables]
            + [b.var for c in calls for b in c.outputs.values()],
        )

    async def submit_call(self, tenant: Tenant, sid: str, spec: CallSpec) -> CallInfo:
        accepted = await self.submit(tenant, sid, Program(calls=[spec]))
        return accepted.calls[0]

    def call_info(self, tenant: Tenant, sid: str, call_id: str) -> CallInfo:
        return self._call(self.sessions.get(sid, tenant), call_id).info()

    async def cancel_call(self, tenant: Tenant, sid: str, call_id: str) -> CallInfo:
        session = self.sessions.get(sid, tenant)
        call = self._call(session, call_id)
        await self.executor.cancel_and_wait(session, call, "cancelled by the client")
        return call.info()

    @staticmethod
    def _call(session: Session, call_id: str) -> Call:
        call = session.graph.calls.get(call_id)
        if call is None:
            raise NotFoundError(f"call {call_id!r} not found in session {session.id!r}")
        return call

    async def _measure_prompts(self, plan: Plan) -> dict[str, list[int]]:
        """Calls whose inputs are all known now get their first prompt tokenized (all in one
        pass), so an oversized prompt is a 400 at submit rather than a failed variable later.
        An output with `max_tokens=None` runs to the end of the window: only its prompt must
        fit. Returns each measured call's prompt ids."""
        engine = self.core.engine
        limit = engine.info.max_context_len
        known = [
            c for c in plan.calls if all(plan.value_of(v) is not None for v in c.inputs.values())
        ]
        encoded = await engine.encode_many(
            [render_prompt(engine, plan.value_of, call, 0) for call in known]
        )
        for call, ids in zip(known, encoded, strict=True):
            if isinstance(ids, PromptTooLongError):  # refused by its length alone
                raise PromptTooLongError(f"call {call.id!r}: {ids}") from None
            if isinstance(ids, Exception):
                raise ids
            n = len(ids)
            max_tokens = next(iter(call.outputs.values())).sampling.max_tokens
            if max_tokens is None and n + 1 > limit:
                raise PromptTooLongError(
                    f"call {call.id!r}: prompt of {n} tokens leaves no room to generate in the "
                    f"context window of {limit} tokens"
                )
            if max_tokens is not None and n + max_tokens > limit:
                raise PromptTooLongError(
                    f"call {call.id!r}: prompt of {n} tokens + max_tokens "
                    f"{max_tokens} exceeds the context window of {limit} tokens"
                )
        return {call.id: ids for call, ids in zip(known, encoded, strict=True)}
