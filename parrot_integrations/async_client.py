"""`AsyncParrotClient`: the asyncio client of Parrot's native API (same methods as
`ParrotClient`, awaited; the settings, retry policy and endpoints are shared in `_http`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from . import _http
from .errors import APIConnectionError
from .protocol.embeddings import EmbeddingResponse
from .protocol.native import (
    CallInfo,
    CallSpec,
    Criteria,
    Program,
    ProgramAccepted,
    SessionInfo,
    VariableChunk,
    VariableState,
)
from .protocol.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Completion,
    CompletionRequest,
    ModelList,
)
from .protocol.tokenize import TokenizeResponse
from .session import AsyncSession

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class AsyncParrotClient:
    """Asyncio client; arguments as `ParrotClient` (`http_client` an `httpx.AsyncClient`). Use `async with AsyncParrotClient() as c:`
    or `await c.aclose()`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = _http.DEFAULT_TIMEOUT,
        max_retries: int = _http.DEFAULT_MAX_RETRIES,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, Any] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = _http.ClientSettings(
            base_url,
            api_key,
            timeout,
            max_retries,
            backoff_base,
            backoff_max,
            default_headers,
            default_query,
        )
        self._owns_http = http_client is None
        self._http = _http.http_client(http_client, httpx.AsyncClient, self.settings)

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    # -- plumbing -------------------------------------------------------------------------------
    async def _send(self, call: _http.Call[Any]) -> httpx.Response:
        """As `ParrotClient._send`, awaited."""
        request = self.settings.build(self._http, call)
        attempt = 0
        while True:
            try:
                response = await self._http.send(request, stream=call.stream)
            except httpx.TransportError as exc:
                delay = self.settings.retry.delay_after_error(exc, attempt)
                if delay is None:
                    raise _http.error_from_transport(exc) from exc
            else:
                if response.is_success:
                    return response
                delay = self.settings.retry.delay_after_response(response, attempt)
                if delay is None:
                    await response.aread()
                    await response.aclose()
                    raise _http.error_from_response(response)
                await response.aclose()
            await asyncio.sleep(delay)
            attempt += 1

    async def _call(self, call: _http.Call[T]) -> T:
        return call.parse(await self._send(call))

    # -- sessions -------------------------------------------------------------------------------
    async def create_session(self, ttl_seconds: float | None = None) -> SessionInfo:
        return await self._call(_http.create_session(ttl_seconds))

    async def get_session(self, session_id: str) -> SessionInfo:
        return await self._call(_http.get_session(session_id))

    async def delete_session(self, session_id: str) -> None:
        """Cancels the session's calls and frees its variables."""
        await self._call(_http.delete_session(session_id))

    def session(self, ttl_seconds: float | None = None) -> AsyncSession:
        """A session created on the server when opened: `async with client.session() as s:`
        (deleted on exit) or `s = await client.session()`."""
        return AsyncSession(self, ttl_seconds)

    # -- variables ------------------------------------------------------------------------------
    async def create_variable(
        self, session_id: str, variable_id: str, value: str | None = None
    ) -> VariableState:
        return await self._call(_http.create_variable(session_id, variable_id, value))

    async def set_variable(self, session_id: str, variable_id: str, value: str) -> VariableState:
        return await self._call(_http.set_variable(session_id, variable_id, value))

    async def get_variable(
        self,
        session_id: str,
        variable_id: str,
        *,
        criteria: Criteria | str | None = None,
        wait: float | None = None,
    ) -> VariableState:
        return await self._call(_http.get_variable(session_id, variable_id, criteria, wait))

    async def stream_variable(
        self, session_id: str, variable_id: str, *, criteria: Criteria | str | None = None
    ) -> AsyncIterator[VariableChunk]:
        response = await self._send(_http.stream_variable(session_id, variable_id, criteria))
        try:
            async for line in response.aiter_lines():
                chunk = _http.parse_sse_line(line)
                if chunk is _http.SSE_DONE:
                    return
                if chunk is not None:
                    yield chunk  # type: ignore[misc]
        except httpx.TransportError as exc:
            raise _http.error_from_transport(exc) from exc
        finally:
            await response.aclose()

    # -- calls and programs ---------------------------------------------------------------------
    async def submit_call(self, session_id: str, call: CallSpec) -> CallInfo:
        return await self._call(_http.submit_call(session_id, call))

    async def submit_program(self, session_id: str, program: Program) -> ProgramAccepted:
        return await self._call(_http.submit_program(session_id, program))

    async def get_call(self, session_id: str, call_id: str) -> CallInfo:
        return await self._call(_http.get_call(session_id, call_id))

    async def cancel_call(self, session_id: str, call_id: str) -> CallInfo:
        return await self._call(_http.cancel_call(session_id, call_id))

    # -- OpenAI-compatible API (/v1) -------------------------------------------------------------
    async def chat_completion(self, request: ChatCompletionRequest) -> ChatCompletion:
        """`POST /v1/chat/completions`, not streamed (the request's `stream` is ignored)."""
        return await self._call(_http.chat_completion(request))

    def chat_completion_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        """`POST /v1/chat/completions` streamed (`async for`); as `ParrotClient`'s."""
        return self._openai_stream(_http.chat_completion_stream(request), ChatCompletionChunk)

    async def completion(self, request: CompletionRequest) -> Completion:
        """`POST /v1/completions`, not streamed."""
        return await self._call(_http.completion(request))

    def completion_stream(self, request: CompletionRequest) -> AsyncIterator[Completion]:
        """`POST /v1/completions` streamed (`async for`); each chunk has the `Completion` shape."""
        return self._openai_stream(_http.completion_stream(request), Completion)

    async def list_models(self) -> ModelList:
        """`GET /v1/models`: the served model."""
        return await self._call(_http.list_models())

    async def embeddings(
        self,
        input: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]],
        *,
        model: str,
        **options: Any,
    ) -> EmbeddingResponse:
        """As `ParrotClient.embeddings`, awaited."""
        return await self._call(_http.embeddings(input, model, options))

    # -- tokenizer (/tokenize, /detokenize) -----------------------------------------------------
    async def tokenize(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[ChatMessage | dict[str, Any]] | None = None,
        **options: Any,
    ) -> TokenizeResponse:
        """As `ParrotClient.tokenize`, awaited."""
        return await self._call(_http.tokenize(prompt, messages, options))

    async def detokenize(self, tokens: Sequence[int], *, model: str | None = None) -> str:
        """As `ParrotClient.detokenize`, awaited."""
        return await self._call(_http.detokenize(tokens, model))

    async def _openai_stream(self, call: _http.Call[None], cls: type[M]) -> AsyncIterator[M]:
        """As `ParrotClient._openai_stream`, awaited."""
        response = await self._send(call)
        try:
            async for line in response.aiter_lines():
                chunk = _http.parse_openai_sse_line(line, cls)
                if chunk is _http.SSE_DONE:
                    return
                if chunk is not None:
                    yield chunk  # type: ignore[misc]
        except httpx.TransportError as exc:
            raise _http.error_from_transport(exc) from exc
        finally:
            await response.aclose()
        raise APIConnectionError("the stream ended before [DONE]")

    # -- lifetime -------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Closes the connections; a caller's `http_client` is left open (it is theirs)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncParrotClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncParrotClient(base_url={self.base_url!r})"
