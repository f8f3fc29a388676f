"""While the server stops, new requests get a 503 with `Retry-After` (another replica, or this
one restarted, will take them) instead of work that would be cut off."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ..core.serve_core import ServeCore
from .errors import error_response


class _RefuseWhileDraining:
    def __init__(self, app: ASGIApp, core: ServeCore) -> None:
        self.app = app
        self.core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.core.draining:
            response = error_response(503, "unavailable_error", "the server is shutting down")
            await response(scope, receive, send)  # with Retry-After, as every 503
            return
        await self.app(scope, receive, send)


def install_draining(app, core: ServeCore) -> None:
    app.add_middleware(_RefuseWhileDraining, core=core)
