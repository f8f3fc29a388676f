"""Runs an app under uvicorn. With a ServeCore, a stop signal first makes the core drain
(`ServeCore.begin_shutdown`): new requests get a 503 and unfinished work ends with a typed
error before uvicorn's grace period is over and it cuts what is left."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn

from ..core.serve_core import ServeCore


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, core: ServeCore, grace: float) -> None:
        super().__init__(config)
        self.core, self.grace = core, grace

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not started yet: nothing runs to drain
            return
        loop.call_soon_threadsafe(self.core.begin_shutdown, self.grace)


def serve(
    app: Any, *, core: ServeCore | None = None, grace: float | None = None, **kw: Any
) -> None:
    """`uvicorn.run(app, **kw)`; `core` drains within `grace` seconds on a stop signal."""
    config = uvicorn.Config(app, timeout_graceful_shutdown=grace, **kw)
    server = uvicorn.Server(config) if core is None else _DrainingServer(config, core, grace or 0)
    server.run()
