"""The ServeCore: one object owning the engine client, sessions, executor and metrics. Built
once per server (`parrot serve`) and handed to the HTTP layer; no global state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from parrot_integrations.protocol.native import CallStatus

from .config import ServeConfig
from .engine_client import EngineClient
from .executor import Executor
from .metrics import Metrics
from .served_models import ServedModels
from .session import SessionManager
from .tenants import TenantLoad

log = logging.getLogger(__name__)

STOP_MARGIN_SECONDS = 2.0  # before the grace period ends: time for readers to get the error


class ServeCore:
    def __init__(
        self,
        engine: EngineClient,
        config: ServeConfig | None = None,
        served_names: tuple[str, ...] = (),
    ) -> None:
        """`served_names`: what clients call the model (`--served-model-name`; default: the
        engine's own name)."""
        self.config = config = config or ServeConfig()
        self.engine = engine
        self.models = ServedModels(engine, served_names)
        self.metrics = Metrics(lambda: self.models.primary)
        self.executor = Executor(engine, self.metrics, config.max_inflight_calls)
        self.sessions = SessionManager(config, self.executor)
        self.tenant_load = TenantLoad(self.sessions.pending_calls)
        self.draining = False  # shutting down: new work is refused (503)
        # Work outside sessions (/v1, /generate) ends through these when the server stops.
        self.stop_hooks: list[Callable[[], Awaitable[None]]] = []
        self._stop_timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        await self.engine.start()
        self.sessions.start()

    def begin_shutdown(self, grace: float) -> None:
        """The server was told to stop: refuse new work now, let what runs finish for most of
        the `grace` seconds, then end the rest with a typed error while its readers are still
        connected (the HTTP server cancels whatever is left when the grace period is over)."""
        if self.draining:
            return
        self.draining = True
        log.info("draining: new work is refused; in-flight work ends within %.1f s", grace)
        delay = max(0.0, grace - min(STOP_MARGIN_SECONDS, grace / 2))
        loop = asyncio.get_running_loop()
        self._stop_timer = loop.call_later(delay, lambda: loop.create_task(self.stop_work()))

    async def stop_work(self) -> None:
        """Sessions closed (their calls cancelled, readers woken with the reason), requests
        outside sessions ended with `ServerShuttingDownError`."""
        await self.sessions.shutdown()
        await self.executor.shutdown()
        await asyncio.gather(*(hook() for hook in self.stop_hooks), return_exceptions=True)

    async def shutdown(self) -> None:
        """Graceful: sessions are closed (their calls cancelled, readers woken with the
        reason), in-flight engine requests aborted, then the engine stops."""
        log.info(
            "shutting down: %d sessions, %d running calls",
            len(self.sessions.sessions),
            self.executor.running,
        )
        self.draining = True
        if self._stop_timer is not None:
            self._stop_timer.cancel()
        await self.stop_work()
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
                    if call.status is CallStatus.RUNNING
                    else "queued"
                    if call.queued
                    else "waiting"
                )
                key = (call.objective.value if call.objective else "none", state)
                counts[key] = counts.get(key, 0) + 1
        for objective in ("latency", "throughput", "none"):
            for state in ("waiting", "queued", "running"):
                self.metrics.queue_depth.labels(objective, state).set(
                    counts.get((objective, state), 0)
                )
