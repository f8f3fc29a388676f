"""The SDK clients of one `Parrot` LLM: one blocking client, and one asyncio client per event
loop (an `httpx.AsyncClient` belongs to the loop it first ran on, so `asyncio.run()` twice, as
LlamaIndex's sync wrappers do, must not reuse a dead loop's connections)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..async_client import AsyncParrotClient
from ..client import ParrotClient


class Clients:
    """Made on first use from the settings; `sync_http` / `async_http` are the caller's httpx
    clients, if any (never closed here)."""

    def __init__(self, settings: dict[str, Any], sync_http: Any, async_http: Any) -> None:
        self._settings = settings
        self._sync_http = sync_http
        self._async_http = async_http
        self._client: ParrotClient | None = None
        self._aclients: dict[int, tuple[asyncio.AbstractEventLoop, AsyncParrotClient]] = {}

    @property
    def sync(self) -> ParrotClient:
        if self._client is None:
            self._client = ParrotClient(**self._settings, http_client=self._sync_http)
        return self._client

    @property
    def current(self) -> AsyncParrotClient:
        """The running loop's client."""
        loop = asyncio.get_running_loop()
        for key, (old, _) in list(self._aclients.items()):
            if old.is_closed():  # its connections died with it
                del self._aclients[key]
        entry = self._aclients.get(id(loop))
        if entry is None or entry[0] is not loop:
            client = AsyncParrotClient(**self._settings, http_client=self._async_http)
            entry = self._aclients[id(loop)] = (loop, client)
        return entry[1]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """The blocking client, and the running loop's."""
        self.close()
        entry = self._aclients.pop(id(asyncio.get_running_loop()), None)
        if entry is not None:
            await entry[1].aclose()
