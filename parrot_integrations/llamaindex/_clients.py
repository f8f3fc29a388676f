"""The SDK clients of one `Parrot` LLM: one `ParrotClient`, and one `AsyncParrotClient` per
event loop. An httpx.AsyncClient belongs to the loop it first ran on: `asyncio.run()` twice, as
LlamaIndex's sync wrappers do, must not reuse a dead loop's connections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..async_client import AsyncParrotClient
from ..client import ParrotClient


class SDKClients:
    """Clients made on first use; `settings()` gives `ParrotClient`'s arguments at that time.
    `sync_http` / `async_http`: the caller's own httpx clients, if any (never closed here)."""

    def __init__(
        self, settings: Callable[[], dict[str, Any]], sync_http: Any = None, async_http: Any = None
    ) -> None:
        self._settings = settings
        self._sync_http, self._async_http = sync_http, async_http
        self._sync: ParrotClient | None = None
        self._by_loop: dict[int, tuple[asyncio.AbstractEventLoop, AsyncParrotClient]] = {}

    @property
    def sync(self) -> ParrotClient:
        if self._sync is None:
            self._sync = ParrotClient(**self._settings(), http_client=self._sync_http)
        return self._sync

    def for_running_loop(self) -> AsyncParrotClient:
        loop = asyncio.get_running_loop()
        # Forget clients of closed loops (their connections died with them).
        for key, (old, _) in list(self._by_loop.items()):
            if old.is_closed():
                del self._by_loop[key]
        entry = self._by_loop.get(id(loop))
        if entry is None or entry[0] is not loop:
            entry = (loop, AsyncParrotClient(**self._settings(), http_client=self._async_http))
            self._by_loop[id(loop)] = entry
        return entry[1]

    def close(self) -> None:
        """Closes the sync client (a later use makes a new one)."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        """Closes the sync client and the running loop's async client."""
        self.close()
        entry = self._by_loop.pop(id(asyncio.get_running_loop()), None)
        if entry is not None:
            await entry[1].aclose()
