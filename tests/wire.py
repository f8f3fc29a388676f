"""`Wire`: what a caller's own httpx client sent (its event hooks record each request), for the
adapters' tests of HTTP settings."""

from __future__ import annotations

import json

import httpx


class Wire:
    """What the caller's httpx client sent: each request's headers, query and JSON body."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def hook(self, request: httpx.Request) -> None:
        self.requests.append(request)

    async def ahook(self, request: httpx.Request) -> None:
        self.requests.append(request)

    def body(self, i: int = -1) -> dict:
        return json.loads(self.requests[i].content)
