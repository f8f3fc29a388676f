"""Optional API key: when the server has one, `/api/...` and `/v1/...` need `Authorization:
Bearer <key>` (what the `openai` client sends); health and metrics stay open for probes."""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request

from .errors import error_response

_PROTECTED = ("/api/", "/v1/")


def install_auth(app: FastAPI, api_key: str | None) -> None:
    if not api_key:
        return
    expected = f"Bearer {api_key}".encode()

    @app.middleware("http")
    async def _check_key(request: Request, call_next):
        if request.url.path.startswith(_PROTECTED):
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return error_response(
                    401, "authentication_error", "missing or wrong API key (Authorization: Bearer)"
                )
        return await call_next(request)
