"""API keys: every route needs `Authorization: Bearer <key>` (what the `openai` client sends)
unless the server is open (no key configured) or the path is public (`/health` by default).

The middleware says who is calling (`request.state.principal`); routes that only the operator
may use (cache flush, metrics, server internals) depend on `require_admin`. A pure ASGI
middleware, so streaming responses and disconnect detection pass through untouched.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..core.errors import PermissionDeniedError
from ..core.tenants import OPEN, KeyTable, Principal
from .errors import error_response

_STATE_KEY = "principal"


class _KeyCheck:
    def __init__(self, app: ASGIApp, keys: KeyTable) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        principal: Principal | None = OPEN
        if not self.keys.open and scope["path"] not in self.keys.public_paths:
            principal = self.keys.lookup(Headers(scope=scope).get("authorization"))
            if principal is None:
                response = error_response(
                    401,
                    "authentication_error",
                    "missing or wrong API key (Authorization: Bearer)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        scope.setdefault("state", {})[_STATE_KEY] = principal
        await self.app(scope, receive, send)


def install_auth(app: FastAPI, keys: KeyTable) -> None:
    app.add_middleware(_KeyCheck, keys=keys)


def principal(request: Request) -> Principal:
    """Who sent the request (a route dependency)."""
    found: Any = getattr(request.state, _STATE_KEY, None)
    return found if isinstance(found, Principal) else OPEN


Caller = Annotated[Principal, Depends(principal)]


def require_admin(request: Request) -> None:
    """A route dependency: operator routes need the admin key (or `--api-key` without one)."""
    if not principal(request).admin:
        raise PermissionDeniedError(
            f"{request.url.path} is an operator route: it needs the admin key"
        )
