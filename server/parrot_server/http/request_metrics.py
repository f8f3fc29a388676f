"""Pure ASGI middleware counting every HTTP response by method, route and status
(`parrot_http_requests_total`). Installed outermost, so the answers of the other middlewares
(401 from the key check, 413/408 from the body limit, 503 while draining) are counted as well
as the routes' and the error handlers'. The route is a path template
(`/api/v1/sessions/{session_id}`), never the raw path, so the label stays bounded."""

from __future__ import annotations

import functools
import re

from fastapi import FastAPI
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.metrics import Metrics

_CONVERTOR = re.compile(r":\w+}")  # `{model:path}` -> `{model}`
UNMATCHED = "unmatched"  # the route label of a path no route serves (a 404)


class _CountResponses:
    def __init__(self, app: ASGIApp, metrics: Metrics, api: FastAPI) -> None:
        self.app, self.metrics, self.api = app, metrics, api

    @functools.cached_property
    def _templates(self) -> list[tuple[re.Pattern[str], str]]:
        """Every documented route's template, for answers given before routing."""
        return [(compile_path(path)[0], path) for path in self.api.openapi()["paths"]]

    def _route(self, scope: Scope) -> str:
        """The route's template: the one the router picked (it notes it in the scope), else,
        for an answer given before routing (a 401, a 413), the one whose template matches."""
        path = getattr(scope.get("route"), "path", None)
        if path is not None:
            return _CONVERTOR.sub("}", path)  # as the OpenAPI document writes it
        return next((t for rx, t in self._templates if rx.match(scope["path"])), UNMATCHED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # when the app raises before answering, Starlette's outer handler does

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.metrics.http_requests.labels(scope["method"], self._route(scope), status).inc()


def install_request_metrics(app: FastAPI, metrics: Metrics) -> None:
    """Call after every other middleware is added (the last added runs first)."""
    app.add_middleware(_CountResponses, metrics=metrics, api=app)
