"""HTTP plumbing shared by `ParrotClient` and `AsyncParrotClient`.

Everything that does not depend on sync vs async I/O lives here once: settings (base URL,
API key, timeouts) and the native, OpenAI-compatible and tokenizer endpoints as request
descriptions. The retry policy (`_retry`), error mapping (`_error_mapping`) and server-sent-event
parsing (`_sse`) have modules of their own; their names are importable from here too, so each
client only runs the loop that sends.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from ._error_mapping import error_from_body as error_from_body
from ._error_mapping import error_from_response as error_from_response
from ._error_mapping import error_from_transport as error_from_transport
from ._retry import DEFAULT_MAX_RETRIES as DEFAULT_MAX_RETRIES
from ._retry import RetryPolicy
from ._retry import retry_after as retry_after
from ._sse import SSE_DONE as SSE_DONE
from ._sse import parse_openai_sse_line as parse_openai_sse_line
from ._sse import parse_sse_line as parse_sse_line
from .errors import InvalidRequestError, ServerError
from .protocol.embeddings import EmbeddingRequest, EmbeddingResponse
from .protocol.native import (
    API_PREFIX,
    CallInfo,
    CallSpec,
    Criteria,
    Program,
    ProgramAccepted,
    SessionCreate,
    SessionInfo,
    VariableCreate,
    VariableSet,
    VariableState,
)
from .protocol.openai import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ModelList,
)
from .protocol.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0
# Longest server-side wait of one `GET .../variables/{id}`: a longer `get(timeout=...)` is
# several waits, so no single request outlives proxies' or the client's idle limits.
MAX_SERVER_WAIT = 60.0
# Added to a server-side wait for the read timeout: the answer comes just after the wait ends.
WAIT_READ_MARGIN = 10.0

T = TypeVar("T")


# -- settings -----------------------------------------------------------------------------------
def normalize_base_url(base_url: str | None = None) -> str:
    """The server root: `base_url`, else `$PARROT_BASE_URL`, else http://127.0.0.1:8000. A
    trailing `/`, `/v1` or `/api/v1` is accepted and stripped (the SDK adds the paths)."""
    url = (base_url or os.environ.get("PARROT_BASE_URL") or DEFAULT_BASE_URL).strip()
    url = url.rstrip("/")
    for suffix in (API_PREFIX, "/v1"):
        if url.endswith(suffix):
            url = url[: -len(suffix)].rstrip("/")
            break
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidRequestError(
            f"base_url {url!r} is not an http(s) URL such as {DEFAULT_BASE_URL!r}"
        )
    return url


def resolve_api_key(api_key: str | None = None) -> str | None:
    """`api_key`, else `$PARROT_API_KEY`; empty means none."""
    return api_key or os.environ.get("PARROT_API_KEY") or None


class ClientSettings:
    """What both clients are configured with; builds their requests. Requests carry absolute
    URLs and all their headers, so a caller's own httpx client works as well as ours."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float | httpx.Timeout | None,
        max_retries: int,
        backoff_base: float,
        backoff_max: float,
        default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, Any] | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.api_key = resolve_api_key(api_key)
        self.timeout = httpx.Timeout(timeout)
        self.retry = RetryPolicy(max_retries, backoff_base, backoff_max)
        headers = {"user-agent": "parrot-sdk"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        # The caller's headers win, as in OpenAI's client (an Authorization of their own, say).
        self.headers = httpx.Headers(headers)
        self.headers.update(default_headers or {})  # case-insensitive: replaces ours
        self.query = dict(default_query or {})

    def httpx_options(self) -> dict[str, Any]:
        return {"timeout": self.timeout}

    def timeout_for(self, call: Call[Any]) -> httpx.Timeout:
        """A stream has no read timeout (tokens may be far apart while the call queues); a
        server-side wait gets a read timeout that outlasts it."""
        if call.stream:
            read = None
        elif call.wait is not None and self.timeout.read is not None:
            read = max(self.timeout.read, call.wait + WAIT_READ_MARGIN)
        else:
            read = self.timeout.read
        t = self.timeout
        return httpx.Timeout(connect=t.connect, read=read, write=t.write, pool=t.pool)

    def build(self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
        headers = self.headers.copy()
        if call.stream:
            headers["accept"] = "text/event-stream"
        return http.build_request(
            call.method,
            self.base_url + call.path,
            json=call.json,
            params={**self.query, **(call.params or {})} or None,
            timeout=self.timeout_for(call),
            headers=headers,
        )


HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)


def http_client(given: HttpT | None, cls: type[HttpT], settings: ClientSettings) -> HttpT:
    """The caller's httpx client (proxies, transports, event hooks of their own), checked to be
    the kind this SDK client drives, else a new one."""
    if given is None:
        return cls(**settings.httpx_options())
    if not isinstance(given, cls):
        raise InvalidRequestError(
            f"http_client must be an httpx.{cls.__name__}, got {type(given).__name__}"
        )
    return given


# -- endpoints ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call(Generic[T]):
    """One native API request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, str] | None = None
    wait: float | None = None  # the server may hold the request this long
    stream: bool = False


def _model(cls: type[BaseModel]) -> Callable[[httpx.Response], Any]:
    def parse(response: httpx.Response) -> Any:
        try:
            return cls.model_validate_json(response.content)
        except ValidationError as exc:
            raise ServerError(
                f"unexpected {cls.__name__} from the server: {exc.errors()[0]['msg']}",
                status_code=response.status_code,
            ) from exc

    return parse


def _nothing(_: httpx.Response) -> None:
    return None


def body(model: type[BaseModel], /, **fields: Any) -> dict[str, Any]:
    """A request body validated on the client (a bad value is an InvalidRequestError here,
    not a round trip). `model` is positional-only: requests have a field of that name."""
    try:
        return model(**fields).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        raise InvalidRequestError(validation_message(exc)) from exc


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
    )


def _session(sid: str) -> str:
    return f"{API_PREFIX}/sessions/{sid}"


def create_session(ttl_seconds: float | None) -> Call[SessionInfo]:
    json = body(SessionCreate, ttl_seconds=ttl_seconds)
    return Call("POST", f"{API_PREFIX}/sessions", _model(SessionInfo), json=json)


def get_session(sid: str) -> Call[SessionInfo]:
    return Call("GET", _session(sid), _model(SessionInfo))


def delete_session(sid: str) -> Call[None]:
    return Call("DELETE", _session(sid), _nothing)


def create_variable(sid: str, vid: str, value: str | None) -> Call[VariableState]:
    json = body(VariableCreate, id=vid, value=value)
    return Call("POST", f"{_session(sid)}/variables", _model(VariableState), json=json)


def set_variable(sid: str, vid: str, value: str) -> Call[VariableState]:
    json = body(VariableSet, value=value)
    return Call("PUT", f"{_session(sid)}/variables/{vid}", _model(VariableState), json=json)


def as_criteria(criteria: Criteria | str | None) -> Criteria | None:
    if criteria is None:
        return None
    try:
        return Criteria(criteria)
    except ValueError:
        raise InvalidRequestError(
            f"criteria must be one of {[c.value for c in Criteria]}, got {criteria!r}"
        ) from None


def _criteria(criteria: Criteria | str | None) -> dict[str, str]:
    value = as_criteria(criteria)
    return {} if value is None else {"criteria": value.value}


def get_variable(
    sid: str, vid: str, criteria: Criteria | str | None, wait: float | None
) -> Call[VariableState]:
    params = _criteria(criteria)
    if wait is not None:
        if wait < 0:
            raise InvalidRequestError(f"wait must be >= 0 seconds, got {wait}")
        params["timeout"] = f"{wait:g}"
    path = f"{_session(sid)}/variables/{vid}"
    return Call("GET", path, _model(VariableState), params=params, wait=wait)


def stream_variable(sid: str, vid: str, criteria: Criteria | str | None) -> Call[None]:
    path = f"{_session(sid)}/variables/{vid}/stream"
    return Call("GET", path, _nothing, params=_criteria(criteria), stream=True)


def submit_call(sid: str, call: CallSpec) -> Call[CallInfo]:
    return Call("POST", f"{_session(sid)}/calls", _model(CallInfo), json=dump(call))


def submit_program(sid: str, program: Program) -> Call[ProgramAccepted]:
    path = f"{_session(sid)}/programs"
    return Call("POST", path, _model(ProgramAccepted), json=dump(program))


def get_call(sid: str, cid: str) -> Call[CallInfo]:
    return Call("GET", f"{_session(sid)}/calls/{cid}", _model(CallInfo))


def cancel_call(sid: str, cid: str) -> Call[CallInfo]:
    return Call("DELETE", f"{_session(sid)}/calls/{cid}", _model(CallInfo))


# -- OpenAI-compatible endpoints -----------------------------------------------------------------
OPENAI_PREFIX = "/v1"


def _openai_body(request: ChatCompletionRequest | CompletionRequest, stream: bool) -> Any:
    """The request as sent: `stream` is the method's choice, not the caller's (a streamed answer
    needs the streaming reader); stream_options only travel with a stream, as the server
    requires."""
    update: dict[str, Any] = {"stream": stream}
    if not stream:
        update["stream_options"] = None
    return dump(request.model_copy(update=update))


def chat_completion(request: ChatCompletionRequest) -> Call[ChatCompletion]:
    path = f"{OPENAI_PREFIX}/chat/completions"
    return Call("POST", path, _model(ChatCompletion), json=_openai_body(request, False))


def chat_completion_stream(request: ChatCompletionRequest) -> Call[None]:
    path = f"{OPENAI_PREFIX}/chat/completions"
    return Call("POST", path, _nothing, json=_openai_body(request, True), stream=True)


def completion(request: CompletionRequest) -> Call[Completion]:
    path = f"{OPENAI_PREFIX}/completions"
    return Call("POST", path, _model(Completion), json=_openai_body(request, False))


def completion_stream(request: CompletionRequest) -> Call[None]:
    path = f"{OPENAI_PREFIX}/completions"
    return Call("POST", path, _nothing, json=_openai_body(request, True), stream=True)


def list_models() -> Call[ModelList]:
    return Call("GET", f"{OPENAI_PREFIX}/models", _model(ModelList))


def embeddings(input: Any, model: str, options: dict[str, Any]) -> Call[EmbeddingResponse]:
    json = body(EmbeddingRequest, input=input, model=model, **options)
    return Call("POST", f"{OPENAI_PREFIX}/embeddings", _model(EmbeddingResponse), json=json)


# -- tokenizer endpoints (vLLM's) ----------------------------------------------------------------
def tokenize(prompt: str | None, messages: Any, options: dict[str, Any]) -> Call[TokenizeResponse]:
    json = body(TokenizeRequest, prompt=prompt, messages=messages, **options)
    return Call("POST", "/tokenize", _model(TokenizeResponse), json=json)


def detokenize(tokens: Any, model: str | None) -> Call[str]:
    parse = _model(DetokenizeResponse)
    json = body(DetokenizeRequest, tokens=tokens, model=model)
    return Call("POST", "/detokenize", lambda r: parse(r).prompt, json=json)
