"""`ParrotClient`: the synchronous client of Parrot's native API (one method per endpoint)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
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
from .session import Session

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class ParrotClient:
    """Blocking client. `base_url` is the server root (default `$PARROT_BASE_URL`, else
    http://127.0.0.1:8000), `api_key` defaults to `$PARROT_API_KEY`, `timeout` (seconds or an
    `httpx.Timeout`) bounds each request, and 429/503 answers and connection failures are
    retried `max_retries` times with exponential backoff from `backoff_base` seconds.
    `default_headers` go with every request (they win over the SDK's own, `Authorization`
    included), `default_query` adds query parameters to every request, and `http_client` is an
    `httpx.Client` of the caller's to send through (not closed by `close()`)."""

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
        http_client: httpx.Client | None = None,
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
        self._http = _http.http_client(http_client, httpx.Client, self.settings)

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    # -- plumbing -------------------------------------------------------------------------------
    def _send(self, call: _http.Call[Any]) -> httpx.Response:
        """Send with retries; an error answer raises its typed exception. A streamed response
        comes back unread (the caller closes it)."""
        request = self.settings.build(self._http, call)
        attempt = 0
        while True:
            try:
                response = self._http.send(request, stream=call.stream)
            except httpx.TransportError as exc:
                delay = self.settings.retry.delay_after_error(exc, attempt)
                if delay is None:
                    raise _http.error_from_transport(exc) from exc
            else:
                if response.is_success:
                    return response
                delay = self.settings.retry.delay_after_response(response, attempt)
                if delay is None:
                    response.read()
                    response.close()
                    raise _http.error_from_response(response)
                response.close()
            time.sleep(delay)
            attempt += 1

    def _call(self, call: _http.Call[T]) -> T:
        return call.parse(self._send(call))

    # -- sessions -------------------------------------------------------------------------------
    def create_session(self, ttl_seconds: float | None = None) -> SessionInfo:
        return self._call(_http.create_session(ttl_seconds))

    def get_session(self, session_id: str) -> SessionInfo:
        return self._call(_http.get_session(session_id))

    def delete_session(self, session_id: str) -> None:
        """Cancels the session's calls and frees its variables."""
        self._call(_http.delete_session(session_id))

    def session(self, ttl_seconds: float | None = None) -> Session:
        """Create a session now; use it as `with client.session() as s:` to delete it on exit."""
        return Session(self, self.create_session(ttl_seconds))

    # -- variables ------------------------------------------------------------------------------
    def create_variable(
        self, session_id: str, variable_id: str, value: str | None = None
    ) -> VariableState:
        return self._call(_http.create_variable(session_id, variable_id, value))

    def set_variable(self, session_id: str, variable_id: str, value: str) -> VariableState:
        return self._call(_http.set_variable(session_id, variable_id, value))

    def get_variable(
        self,
        session_id: str,
        variable_id: str,
        *,
        criteria: Criteria | str | None = None,
        wait: float | None = None,
    ) -> VariableState:
        """The variable's state; the server holds the request up to `wait` seconds while it is
        pending (None: the server's default). `criteria` tells the server how it is read."""
        return self._call(_http.get_variable(session_id, variable_id, criteria, wait))

    def stream_variable(
        self, session_id: str, variable_id: str, *, criteria: Criteria | str | None = None
    ) -> Iterator[VariableChunk]:
        """The variable's text as it is generated, one chunk per server-sent event; the last
        chunk has `done=True`."""
        response = self._send(_http.stream_variable(session_id, variable_id, criteria))
        try:
            for line in response.iter_lines():
                chunk = _http.parse_sse_line(line)
                if chunk is _http.SSE_DONE:
                    return
                if chunk is not None:
                    yield chunk  # type: ignore[misc]
        except httpx.TransportError as exc:
            raise _http.error_from_transport(exc) from exc
        finally:
            response.close()

    # -- calls and programs ---------------------------------------------------------------------
    def submit_call(self, session_id: str, call: CallSpec) -> CallInfo:
        return self._call(_http.submit_call(session_id, call))

    def submit_program(self, session_id: str, program: Program) -> ProgramAccepted:
        return self._call(_http.submit_program(session_id, program))

    def get_call(self, session_id: str, call_id: str) -> CallInfo:
        return self._call(_http.get_call(session_id, call_id))

    def cancel_call(self, session_id: str, call_id: str) -> CallInfo:
        return self._call(_http.cancel_call(session_id, call_id))

    # -- OpenAI-compatible API (/v1) -------------------------------------------------------------
    def chat_completion(self, request: ChatCompletionRequest) -> ChatCompletion:
        """`POST /v1/chat/completions`, not streamed (the request's `stream` is ignored)."""
        return self._call(_http.chat_completion(request))

    def chat_completion_stream(
        self, request: ChatCompletionRequest
    ) -> Iterator[ChatCompletionChunk]:
        """`POST /v1/chat/completions` streamed: one chunk per event until `[DONE]`. For the
        final usage chunk build the request with `stream=True, stream_options={"include_usage":
        True}` (the model only accepts stream_options alongside stream=True)."""
        yield from self._openai_stream(_http.chat_completion_stream(request), ChatCompletionChunk)

    def completion(self, request: CompletionRequest) -> Completion:
        """`POST /v1/completions`, not streamed."""
        return self._call(_http.completion(request))

    def completion_stream(self, request: CompletionRequest) -> Iterator[Completion]:
        """`POST /v1/completions` streamed; each chunk has the `Completion` shape."""
        yield from self._openai_stream(_http.completion_stream(request), Completion)

    def list_models(self) -> ModelList:
        """`GET /v1/models`: the served model."""
        return self._call(_http.list_models())

    def embeddings(
        self,
        input: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]],
        *,
        model: str,
        **options: Any,
    ) -> EmbeddingResponse:
        """`POST /v1/embeddings`: the vectors of `input` (a text, a list of texts, or token
        ids of the embedding model's vocabulary: one list, or a list of lists) from the
        embedding model served as `model` (listed by `list_models`). `options`: the other
        fields of `EmbeddingRequest` (`encoding_format`, `dimensions`, `user`)."""
        return self._call(_http.embeddings(input, model, options))

    # -- tokenizer (/tokenize, /detokenize) -----------------------------------------------------
    def tokenize(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[ChatMessage | dict[str, Any]] | None = None,
        **options: Any,
    ) -> TokenizeResponse:
        """`POST /tokenize`: `prompt` (a text) or `messages` (a chat, rendered with the
        model's chat template as `/v1/chat/completions` renders it) as the server's model
        tokenizes it. `options`: the other fields of `TokenizeRequest`
        (`add_special_tokens`, `add_generation_prompt`, `continue_final_message`, `tools`,
        `return_token_strs`, `model`)."""
        return self._call(_http.tokenize(prompt, messages, options))

    def detokenize(self, tokens: Sequence[int], *, model: str | None = None) -> str:
        """`POST /detokenize`: the text of `tokens` (special tokens included)."""
        return self._call(_http.detokenize(tokens, model))

    def _openai_stream(self, call: _http.Call[None], cls: type[M]) -> Iterator[M]:
        """Chunks until `[DONE]`; an error event raises its typed exception, and a stream cut
        before `[DONE]` is an `APIConnectionError` (never a silently short answer)."""
        response = self._send(call)
        try:
            for line in response.iter_lines():
                chunk = _http.parse_openai_sse_line(line, cls)
                if chunk is _http.SSE_DONE:
                    return
                if chunk is not None:
                    yield chunk  # type: ignore[misc]
        except httpx.TransportError as exc:
            raise _http.error_from_transport(exc) from exc
        finally:
            response.close()
        raise APIConnectionError("the stream ended before [DONE]")

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Closes the connections; a caller's `http_client` is left open (it is theirs)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> ParrotClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ParrotClient(base_url={self.base_url!r})"
