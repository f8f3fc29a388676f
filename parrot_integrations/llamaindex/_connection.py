"""`ServerConnection`: how a LlamaIndex component of ours reaches its Parrot server (`Parrot`,
`ParrotEmbedding`): the server's root, key, timeout and retries as fields, and the SDK clients
made from them: a blocking one made on first use, and an asyncio one per event loop (an
`httpx.AsyncClient` belongs to the loop it first ran on: `asyncio.run()` twice, as LlamaIndex's
sync wrappers do, must not reuse a dead loop's connections)."""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import BaseModel, Field, PrivateAttr, field_validator

from .. import _http
from ..async_client import AsyncParrotClient
from ..client import ParrotClient
from ._clients import SDKClients


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
    default_headers: dict[str, str] | None = Field(
        default=None, description="HTTP headers for every request; they win over the SDK's."
    )
    http_client: Any = Field(
        default=None, exclude=True, description="An httpx.Client of yours for sync calls."
    )
    async_http_client: Any = Field(
        default=None, exclude=True, description="An httpx.AsyncClient of yours for async calls."
    )

    _clients: SDKClients | None = PrivateAttr(default=None)

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
            "default_headers": self.default_headers,
        }

    @property
    def _sdk(self) -> SDKClients:
        if self._clients is None:
            self._clients = SDKClients(
                self._client_kwargs, self.http_client, self.async_http_client
            )
        return self._clients

    @property
    def client(self) -> ParrotClient:
        return self._sdk.sync

    @property
    def aclient(self) -> AsyncParrotClient:
        """The running loop's client."""
        return self._sdk.for_running_loop()

    def close(self) -> None:
        """Closes the blocking client (not an `http_client` of yours)."""
        self._sdk.close()

    async def aclose(self) -> None:
        """The blocking client and the running loop's."""
        await self._sdk.aclose()
