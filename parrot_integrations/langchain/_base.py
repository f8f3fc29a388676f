"""Fields and client plumbing shared by `ChatParrot` and `ParrotLLM`.

Named and aliased as langchain-openai's models, so swapping `ChatOpenAI(model=..., api_key=...,
base_url=..., max_tokens=..., timeout=...)` for `ChatParrot(...)` keeps working arguments.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx
from langchain_core.utils import from_env, secret_from_env
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
)

from .. import _http
from ..async_client import AsyncParrotClient
from ..client import ParrotClient
from ..errors import InvalidRequestError, ParrotError
from ..protocol.native import Criteria
from ..protocol.openai import DEFAULT_MODEL_ALIAS
from ._errors import mapped_errors
from ._sessions import SessionPool

T = TypeVar("T")


class ParrotBase(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)  # an httpx.Timeout

    model: str | None = Field(default=None, validation_alias=AliasChoices("model", "model_name"))
    """Model name (alias `model_name`). None: the server's only model (`GET /v1/models`)."""

    base_url: str = Field(
        default_factory=from_env("PARROT_BASE_URL", default=_http.DEFAULT_BASE_URL),
        validation_alias=AliasChoices("base_url", "api_base", "openai_api_base"),
        validate_default=True,  # the env value is normalized too
    )
    """Server root (aliases `api_base`, `openai_api_base`); default `$PARROT_BASE_URL`, else
    http://127.0.0.1:8000. A trailing `/v1` (an OpenAI-style base URL) is accepted and removed."""

    api_key: SecretStr | None = Field(
        default_factory=secret_from_env("PARROT_API_KEY", default=None),
        validation_alias=AliasChoices("api_key", "parrot_api_key", "openai_api_key"),
    )
    """Sent as `Authorization: Bearer`; default `$PARROT_API_KEY`; none when the server has no
    key set."""

    temperature: float | None = None
    """Sampling temperature, 0..2; 0 is greedy. None: the server's default (1.0)."""

    top_p: float | None = None
    """Nucleus sampling cut, 0..1. None: no cut."""

    seed: int | None = None
    """Seed of the request's sampler: same seed, prompt and settings give the same text."""

    timeout: float | httpx.Timeout | None = Field(
        default=_http.DEFAULT_TIMEOUT, validation_alias=AliasChoices("timeout", "request_timeout")
    )
    """Seconds per HTTP request, or an `httpx.Timeout` (alias `request_timeout`); None: no
    limit. A non-streamed request waits for the whole answer, so allow for the generation
    time."""

    max_retries: int = Field(default=_http.DEFAULT_MAX_RETRIES, ge=0)
    """Retries of 429/503 answers and of connections that never reached the server, with
    exponential backoff (requests the server may have acted on are not retried)."""

    streaming: bool = False
    """Stream tokens internally for `invoke` too (callbacks get each token)."""

    session_id: str | None = None
    """Parrot extension: a live session (native API) to attach the requests to; it keeps the
    session from expiring. A closed or expired one is a `ModelNotFoundError`."""

    criteria: Criteria | None = None
    """Parrot extension: "latency" (engine priority for interactive use) or "throughput"
    (may be packed into big batches). None: the server's default."""

    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Other request fields sent as they are (OpenAI's or Parrot's, e.g. `top_k`,
    `ignore_eos`); the fields above and a call's keyword arguments win over them."""

    extra_body: dict[str, Any] | None = None
    """More request fields merged into the body last (vendor extras such as `top_k`,
    `repetition_penalty`, `chat_template_kwargs`), as the `openai` client's `extra_body`; a
    call's `extra_body` is merged over it."""

    frequency_penalty: float | None = None
    """Penalty on tokens by how often they already appear. None: the server's (0)."""

    presence_penalty: float | None = None
    """Penalty on tokens that already appear. None: the server's (0)."""

    logit_bias: dict[int, float] | None = None
    """Token id -> bias added to its logit."""

    disabled_params: dict[str, Any] | None = None
    """Request fields never sent (as `ChatOpenAI`'s: a field set here is dropped from every
    request, whatever its value)."""

    default_headers: dict[str, str] | None = None
    """HTTP headers sent with every request; they win over the SDK's own (`Authorization`
    included)."""

    default_query: dict[str, Any] | None = None
    """Query parameters added to every request."""

    http_client: Any = Field(default=None, exclude=True)
    """An `httpx.Client` of yours for the blocking calls (proxies, transports, event hooks);
    never closed by the model."""

    http_async_client: Any = Field(default=None, exclude=True)
    """An `httpx.AsyncClient` of yours for the async calls (on every event loop: see
    docs/langchain.md); never closed by the model."""

    organization: str | None = Field(
        default=None, validation_alias=AliasChoices("organization", "openai_organization")
    )
    """Accepted for `ChatOpenAI` compatibility (alias `openai_organization`); no effect: a
    Parrot server has no organizations (tenants are chosen by the API key)."""

    openai_proxy: str | None = None
    """Refused when set: pass `http_client=httpx.Client(proxy=...)` and
    `http_async_client=httpx.AsyncClient(proxy=...)` (clients you own and close)."""

    tiktoken_model_name: str | None = None
    """Accepted for `ChatOpenAI` compatibility; no effect: tokens are counted by the server's
    own tokenizer (`get_token_ids`)."""

    _client: ParrotClient | None = PrivateAttr(default=None)
    # httpx's async client belongs to the loop that made it: one per event loop.
    _aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncParrotClient] = (
        PrivateAttr(default_factory=weakref.WeakKeyDictionary)
    )
    # Native sessions for batches and shipped chains, reused across runs (`_sessions.py`).
    _sessions: SessionPool = PrivateAttr(default_factory=SessionPool)
    # The server's name for its model (`ls_model_name` in traces), once asked.
    _served_name: str | None = PrivateAttr(default=None)

    @field_validator("openai_proxy")
    @classmethod
    def _proxy_through_client(cls, v: str | None) -> None:
        if v is not None:
            raise ValueError(
                "openai_proxy is not supported: pass http_client=httpx.Client(proxy=...) and "
                "http_async_client=httpx.AsyncClient(proxy=...)"
            )
        return None

    @field_validator("http_client", "http_async_client")
    @classmethod
    def _httpx_client(cls, v: Any, info: ValidationInfo) -> Any:
        kind = httpx.Client if info.field_name == "http_client" else httpx.AsyncClient
        if v is not None and not isinstance(v, kind):
            raise ValueError(f"must be an httpx.{kind.__name__}, got {type(v).__name__}")
        return v

    @field_validator("base_url")
    @classmethod
    def _normalize_base_url(cls, v: str) -> str:
        try:
            return _http.normalize_base_url(v)
        except ParrotError as exc:
            raise ValueError(exc.message) from None

    # -- clients ------------------------------------------------------------------------------
    def _client_args(self, http_client: Any) -> dict[str, Any]:
        key = self.api_key.get_secret_value() if self.api_key else None
        return {
            "base_url": self.base_url,
            "api_key": key,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "default_headers": self.default_headers,
            "default_query": self.default_query,
            "http_client": http_client,
        }

    @property
    def client(self) -> ParrotClient:
        """The blocking SDK client (made on first use, reused)."""
        if self._client is None:
            self._client = ParrotClient(**self._client_args(self.http_client))
        return self._client

    @property
    def async_client(self) -> AsyncParrotClient:
        """The asyncio SDK client of the running event loop (made on first use there)."""
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            args = self._client_args(self.http_async_client)
            client = self._aclients[loop] = AsyncParrotClient(**args)
        return client

    async def _close_async_client(self) -> None:
        await self._sessions.aclose_loop()
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    # -- request --------------------------------------------------------------------------------
    def _sampling(self) -> dict[str, Any]:
        """The request fields this model sets (None: left to the server)."""
        fields = {
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            # JSON object keys are strings
            "logit_bias": {str(k): v for k, v in self.logit_bias.items()}
            if self.logit_bias
            else None,
            "session_id": self.session_id,
            "criteria": self.criteria,
            **self._own_fields(),
        }
        set_fields = {k: v for k, v in fields.items() if v is not None}
        return {**self.model_kwargs, **set_fields, **(self.extra_body or {})}

    def _own_fields(self) -> dict[str, Any]:
        """The request fields of one model class (None: left to the server)."""
        return {}

    def _params(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The fields, then a call's keyword arguments (its `extra_body` merged over the
        model's), less `disabled_params`."""
        extra = kwargs.pop("extra_body", None) or {}
        params = {**self._default_params(), **kwargs, **extra}
        for name in self.disabled_params or ():
            params.pop(name, None)
        return params

    @staticmethod
    def _build(cls: type[BaseModel], params: dict[str, Any]) -> Any:
        """A request model from params; an unknown or bad value is the SDK's
        `InvalidRequestError` here, before any request."""
        from pydantic import ValidationError

        try:
            return cls(**params)
        except ValidationError as exc:
            raise InvalidRequestError(_http.validation_message(exc)) from exc

    # -- token counting -------------------------------------------------------------------------
    def get_token_ids(self, text: str) -> list[int]:
        """`text`'s token ids as the server's model tokenizes a text prompt (`POST /tokenize`);
        never a download. `custom_get_token_ids`, when set, wins (as in LangChain's models)."""
        custom = getattr(self, "custom_get_token_ids", None)  # BaseLanguageModel's field
        if custom is not None:
            return custom(text)
        with mapped_errors():
            # No special tokens: the server adds none to a text prompt either.
            return self.client.tokenize(text, add_special_tokens=False, model=self.model).tokens

    def _ls_model_name(self, kwargs: dict[str, Any]) -> str:
        model = kwargs.get("model")
        return model if isinstance(model, str) else self.model or DEFAULT_MODEL_ALIAS


def loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_private_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`asyncio.run(main())` for a sync method: in this thread, or, when this thread already
    runs a loop (a notebook cell calling the sync API), in one helper thread; the caller's
    context (LangChain's run config, tracing) goes along either way."""
    if not loop_running():
        return asyncio.run(main())
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(context.run, asyncio.run, main()).result()
