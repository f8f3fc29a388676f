"""`ServerConnection`: how a LlamaIndex component of ours reaches its Parrot server (`Parrot`,
`ParrotEmbedding`): the server's root, key, timeout and retries as fields, and the SDK clients
made from them: a blocking one made on first use, and an asyncio one per event loop (an
`httpx.AsyncClient` belongs to the loop it first ran on: `asyncio.run()` twice, as LlamaIndex's
sync wrappers do, must not reuse a dead loop's connections)."""

from __future__ import annotations

import asyncio

from llama_index.core.bridge.pydantic import BaseModel, Field, PrivateAttr, field_validator

from .. import _http
from ..async_client import AsyncParrotClient
from ..client import ParrotClient


class ServerConnection(BaseModel):
    api_base: str = Field(
        default_factory=lambda: _http.normalize_base_url(None),
        description="Parrot server root ($PARROT_BASE_URL); a trailing /v1 is accepted.",
    )
    api_key: str | None = Field(
        default=None, exclude=True, description="Bearer API key ($PARROT_API_KEY)."
    )
    timeout: float = Field(default=60.0, ge=0, description="Seconds per HTTP request.")
    max_retries: int = Field(default=2, ge=0, description="Retries on 429/503/connect errors.")

    _client: ParrotClient | None = PrivateAttr(default=None)
    _aclients: dict[int, tuple[asyncio.AbstractEventLoop, AsyncParrotClient]] = PrivateAttr(
        default_factory=dict
    )

    @field_validator("api_base")
    @classmethod
    def _valid_base(cls, value: str) -> str:
        # Checked now: a bad URL is an error at construction, not at the first call.
        return _http.normalize_base_url(value)

    def _client_kwargs(self) -> dict:
        return {
            "base_url": self.api_base,
            "api_key": self.api_key,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
        }

    @property
    def client(self) -> ParrotClient:
        if self._client is None:
            self._client = ParrotClient(**self._client_kwargs())
        return self._client

    @property
    def aclient(self) -> AsyncParrotClient:
        """The running loop's client."""
        loop = asyncio.get_running_loop()
        # Forget clients of closed loops (their connections died with them).
        for key, (old, _) in list(self._aclients.items()):
            if old.is_closed():
                del self._aclients[key]
        entry = self._aclients.get(id(loop))
        if entry is None or entry[0] is not loop:
            entry = (loop, AsyncParrotClient(**self._client_kwargs()))
            self._aclients[id(loop)] = entry
        return entry[1]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """The blocking client and the running loop's."""
        self.close()
        entry = self._aclients.pop(id(asyncio.get_running_loop()), None)
        if entry is not None:
            await entry[1].aclose()
