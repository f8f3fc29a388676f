"""Runs an app under uvicorn on a socket already listening (`startup.listen`: bound before the
model loads, so nothing can take the port meanwhile). With a ServeCore, a stop signal first
makes the core drain (`ServeCore.begin_shutdown`): new requests get a 503 and unfinished work
ends with a typed error before uvicorn's grace period is over and it cuts what is left."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn

from ..core.serve_core import ServeCore
from ..startup import url_of

log = logging.getLogger("parrot_server.startup")


class _Server(uvicorn.Server):
    """Says when it serves (uvicorn does not, on a socket it was given)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            url = url_of(self.config.host, self.config.port)
            log.info("ready: serving on %s", url, extra={"url": url})


class _DrainingServer(_Server):
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
    app: Any,
    sock: socket.socket,
    *,
    core: ServeCore | None = None,
    grace: float | None = None,
    **kw: Any,
) -> None:
    """uvicorn serving `app` on the listening `sock` (`kw`: uvicorn's options); `core` drains
    within `grace` seconds on a stop signal."""
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=grace, **kw)
    server = _Server(config) if core is None else _DrainingServer(config, core, grace or 0)
    server.run(sockets=[sock])
