"""The ServeCore: one object owning the engine client, sessions, executor and metrics. Built
once per server (`parrot serve`) and handed to the HTTP layer; no global state."""

from __future__ import annotations

import logging

from .config import ServeConfig
from .engine_client import EngineClient
from .executor import Executor
from .metrics import Metrics
from .session import SessionManager
from .tenants import TenantLoad

log = logging.getLogger(__name__)


class ServeCore:
    def __init__(self, engine: EngineClient, config: ServeConfig | None = None) -> None:
        self.config = config = config or ServeConfig()
        self.engine = engine
        self.metrics = Metrics()
        self.executor = Executor(engine, self.metrics, config.max_inflight_calls)
        self.sessions = SessionManager(config, self.executor)
        self.tenant_load = TenantLoad(self.sessions.pending_calls)

    async def start(self) -> None:
        await self.engine.start()
        self.sessions.start()

    async def shutdown(self) -> None:
        """Graceful: sessions are closed (their calls cancelled, readers woken with the
        reason), in-flight engine requests aborted, then the engine stops."""
        log.info(
            "shutting down: %d sessions, %d running calls",
            len(self.sessions.sessions),
            self.executor.running,
        )
        await self.sessions.shutdown()
        await self.executor.shutdown()
        await self.engine.shutdown()

    async def refresh_metrics(self) -> None:
        """Gauges that are read at scrape time: engine load, queue depth per objective."""
        self.metrics.set_engine_load(await self.engine.load())
        self.metrics.sessions.set(len(self.sessions.sessions))
        counts: dict[tuple[str, str], int] = {}
        for session in self.sessions.sessions.values():
            for call in session.graph.calls.values():
                if call.finished:
                    continue
                state = (
                    "running"
                    if call.status.value == "running"
                    else "queued"
                    if "queued" in call.extra
                    else "waiting"
                )
                key = (call.objective.value if call.objective else "none", state)
                counts[key] = counts.get(key, 0) + 1
        for objective in ("latency", "throughput", "none"):
            for state in ("waiting", "queued", "running"):
                self.metrics.queue_depth.labels(objective, state).set(
                    counts.get((objective, state), 0)
                )
