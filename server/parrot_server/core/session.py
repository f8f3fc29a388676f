"""Sessions: the unit of ownership. A session holds one graph (its variables and calls); closing
it (DELETE, or expiry after `ttl` idle seconds) cancels its calls, which aborts their engine
requests and frees their KV, and fails its pending variables so no reader waits forever."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator

from parrot_integrations.protocol.native import CallStatus, SessionInfo

from .config import ServeConfig
from .errors import LimitExceededError, NotFoundError
from .executor import Executor
from .graph import Graph, GraphLimits
from .tenants import DEFAULT_TENANT, Tenant

log = logging.getLogger(__name__)

REAP_PERIOD_SECONDS = 1.0  # how often idle sessions are looked for (expiry is this late at most)


class Session:
    def __init__(
        self, session_id: str, ttl: float, limits: GraphLimits, tenant: Tenant = DEFAULT_TENANT
    ) -> None:
        self.id = session_id
        self.ttl = ttl
        self.tenant = tenant  # the owner: other tenants are told the session does not exist
        self.graph = Graph(limits)
        self.last_used = time.monotonic()

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def expired(self, now: float, busy: bool) -> bool:
        return not busy and now - self.last_used > self.ttl

    def unfinished_calls(self) -> int:
        return sum(1 for c in self.graph.calls.values() if not c.finished)

    def info(self) -> SessionInfo:
        calls = self.graph.calls.values()
        return SessionInfo(
            session_id=self.id,
            ttl_seconds=self.ttl,
            expires_in=max(0.0, self.ttl - (time.monotonic() - self.last_used)),
            variables=len(self.graph.variables),
            calls=len(calls),
            calls_running=sum(1 for c in calls if c.status is CallStatus.RUNNING),
        )


class SessionManager:
    def __init__(self, config: ServeConfig, executor: Executor) -> None:
        self.config = config
        self.executor = executor
        self.sessions: dict[str, Session] = {}
        self._limits = GraphLimits(
            max_variables=config.max_variables_per_session,
            max_calls=config.max_calls_per_session,
            max_calls_per_program=config.max_calls_per_program,
            max_value_chars=config.max_value_chars,
        )
        self._reaper: asyncio.Task | None = None

    def create(self, ttl: float | None = None, tenant: Tenant = DEFAULT_TENANT) -> Session:
        if len(self.sessions) >= self.config.max_sessions:
            raise LimitExceededError(
                f"the server holds at most {self.config.max_sessions} sessions; close one or "
                "wait for idle ones to expire"
            )
        cap = tenant.max_sessions
        if cap is not None and sum(1 for _ in self.of(tenant)) >= cap:
            raise LimitExceededError(
                f"tenant {tenant.name!r} may hold at most {cap} sessions; close one or wait "
                "for idle ones to expire"
            )
        ttl = min(ttl or self.config.session_ttl_seconds, self.config.max_session_ttl_seconds)
        session = Session(uuid.uuid4().hex, ttl, self._limits, tenant)
        self.sessions[session.id] = session
        return session

    def of(self, tenant: Tenant) -> Iterator[Session]:
        return (s for s in self.sessions.values() if s.tenant.name == tenant.name)

    def pending_calls(self, tenant: Tenant) -> int:
        return sum(s.unfinished_calls() for s in self.of(tenant))

    def get(self, session_id: str, tenant: Tenant = DEFAULT_TENANT) -> Session:
        session = self._owned(session_id, tenant)
        session.touch()
        return session

    def _owned(self, session_id: str, tenant: Tenant) -> Session:
        session = self.sessions.get(session_id)
        # Another tenant's session gets the same answer as a missing one: ids stay secret.
        if session is None or session.tenant.name != tenant.name:
            raise NotFoundError(f"session {session_id!r} not found (closed or expired)")
        return session

    def close(
        self, session_id: str, reason: str = "session closed", tenant: Tenant | None = None
    ) -> None:
        """`tenant`: the caller, who must own the session (None: the server itself)."""
        session = self._owned(session_id, tenant) if tenant else self.sessions.get(session_id)
        if session is None:
            raise NotFoundError(f"session {session_id!r} not found (closed or expired)")
        del self.sessions[session_id]
        for call in session.graph.calls.values():
            self.executor.cancel(session, call, reason)
        for var in session.graph.variables.values():
            var.fail(reason)  # client-set variables nobody set yet: wake their readers

    def busy(self, session: Session) -> bool:
        return any(c.status is CallStatus.RUNNING for c in session.graph.calls.values())

    def expire(self) -> list[str]:
        now = time.monotonic()
        gone = [s.id for s in self.sessions.values() if s.expired(now, self.busy(s))]
        for sid in gone:
            log.info("session %s expired", sid)
            self.close(sid, "session expired")
        return gone

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_PERIOD_SECONDS)
            self.expire()

    async def shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for sid in list(self.sessions):
            self.close(sid, "server shutting down")
