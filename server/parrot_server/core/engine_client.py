"""What the ServeCore needs from an engine, and the in-process implementation.

The ServeCore never touches an `Engine` directly: it talks to an `EngineClient`, so the same
core drives the embedded engine in this process and engines in other processes or real SGLang
workers over HTTP.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from jinja2 import TemplateError

from ..engine.errors import InvalidRequestError
from ..engine.request import RequestOutput
from ..engine.sampling_params import SamplingParams


class OutputStream(Protocol):
    """Outputs of one submitted request, in order; the last carries `finish_reason`."""

    rid: str

    def __aiter__(self) -> AsyncIterator[RequestOutput]: ...

    async def aclose(self) -> None:
        """Abort the request if it is still running."""


@dataclass(frozen=True)
class EngineInfo:
    model: str  # served model name (what /v1/models lists)
    model_path: str
    max_context_len: int
    kv_pool_tokens: int
    max_running_requests: int


@dataclass(frozen=True)
class EngineLoad:
    """A snapshot for scheduling and /metrics."""

    waiting_requests: int
    running_requests: int
    kv_pool_tokens: int
    kv_used_tokens: int
    cached_tokens: int
    prompt_tokens_total: int
    cached_prompt_tokens_total: int
    generated_tokens_total: int
    # Tokens drafted from requests' own text and verified, and those the model accepted (0 from
    # engines that do not draft or do not report it).
    draft_tokens_total: int = 0
    accepted_draft_tokens_total: int = 0


@dataclass(frozen=True)
class EngineStatus:
    """One engine as `/health` lists it."""

    name: str
    model: str | None  # None: never reached
    healthy: bool
    running_requests: int  # placed by this ServeCore and not finished


@dataclass(frozen=True)
class Submission:
    prompt: str | list[int]
    sampling: SamplingParams
    rid: str | None = None
    priority: int = 0  # the call's objective as engine priority (objective.PRIORITY)
    # What a scheduler over many engines places by (one engine ignores them):
    task_group: str | None = None  # the maps of one reduce: kept together when they fit
    app: str | None = None  # the session the call belongs to (fairness, logs)
    # Prefix-cache namespace (`tenants.cache_key`): requests in different ones never share KV.
    namespace: str | None = None


class EngineClient(abc.ABC):
    info: EngineInfo

    async def submit(
        self,
        prompt: str | list[int],
        sampling: SamplingParams,
        *,
        rid: str | None = None,
        priority: int = 0,
        app: str | None = None,
        namespace: str | None = None,
    ) -> OutputStream:
        """Queue one generation. Bad input (prompt too long, bad sampling) raises a typed
        `EngineError` here, before anything streams; a full queue raises
        `EngineOverloadedError`."""
        sub = Submission(prompt, sampling, rid, priority, app=app, namespace=namespace)
        (result,) = await self.submit_many([sub])
        if isinstance(result, BaseException):
            raise result
        return result

    @abc.abstractmethod
    async def submit_many(self, items: list[Submission]) -> list[OutputStream | Exception]:
        """Queue several generations at once, so the engine admits them together (a task
        group). Each item gets its stream, or the error `submit` would have raised."""

    @abc.abstractmethod
    async def abort(self, rid: str) -> bool: ...

    @abc.abstractmethod
    async def load(self) -> EngineLoad: ...

    @abc.abstractmethod
    def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        template_kwargs: dict[str, Any] | None = None,
    ) -> str:
        """The model's chat template applied to `messages` (and `tools`, for a template that
        renders them), ending with the assistant's turn (`add_generation_prompt`), or with the
        last message left open (`continue_final_message`). A chat the template refuses raises
        `InvalidRequestError`."""

    @property
    @abc.abstractmethod
    def chat_template(self) -> str | None:
        """The model's chat template text (None: the tokenizer has none)."""

    async def count_tokens(self, text: str) -> int:
        return len(await self.encode(text))

    @abc.abstractmethod
    async def encode(
        self, text: str, *, add_special_tokens: bool = False, fit_window: bool = True
    ) -> list[int]:
        """`text` as the engine tokenizes a text prompt (no special tokens added, unless asked
        for), off the event loop and the engine's thread (`TokenizerThread`). With
        `fit_window`, a text that cannot fit the context window raises `PromptTooLongError`,
        found from its length before tokenizing."""

    @abc.abstractmethod
    async def encode_many(self, texts: list[str]) -> list[list[int] | Exception]:
        """Each text as `encode` makes it (window enforced), in one pass; a text that cannot
        fit gets its `PromptTooLongError` in its place."""

    @abc.abstractmethod
    async def decode(self, ids: list[int]) -> str:
        """The text of `ids`, special tokens included; an id outside the vocabulary raises
        `InvalidRequestError`."""

    @abc.abstractmethod
    async def token_strs(self, ids: list[int]) -> list[str]:
        """The vocabulary entry of each of `ids` (`InvalidRequestError` as `decode`)."""

    async def start(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Called once on the server's event loop before the first request."""

    async def health(self) -> bool:
        """Whether the engine answers; an in-process engine always does."""
        return True

    async def engines(self) -> list[EngineStatus]:
        """The engines behind this client (one, unless it is a pool)."""
        load = await self.load()
        running = load.running_requests + load.waiting_requests
        return [EngineStatus("local", self.info.model, await self.health(), running)]

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop: in-flight requests end as aborted."""


def render_chat(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list | None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    template_kwargs: dict[str, Any] | None = None,
) -> str:
    """`template_kwargs`: more variables for the template (vLLM's `chat_template_kwargs`)."""
    try:
        return tokenizer.apply_chat_template(
            messages,
            tools=tools,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            **(template_kwargs or {}),
        )
    # The template's own `raise_exception` (roles that must alternate, ...) and transformers'
    # checks of the chat (a final message to continue that the template drops) are about the
    # request.
    except (TemplateError, ValueError) as exc:
        raise InvalidRequestError(f"the model's chat template refused the chat: {exc}") from exc


def template_text(tokenizer: Any) -> str | None:
    template = tokenizer.chat_template
    if isinstance(template, dict):  # several named templates
        template = template.get("default")
    return template


def default_max_tokens(info: EngineInfo, prompt_ids: list[int]) -> int:
    """The generation limit when none is given (`/v1` without `max_tokens`, a native output
    with `max_tokens=None`): to the end of the context window, or of the KV pool if smaller,
    less the prompt; at least 1. One token short of the window: an SGLang worker refuses a
    request whose prompt + max_new_tokens reaches its context length (and serves at most
    pool - 1 tokens per request); our engine would only have capped it. Takes the ids the
    engine will get, so the prompt is not tokenized a second time for it."""
    n = len(prompt_ids)
    return max(1, min(info.max_context_len, info.kv_pool_tokens) - 1 - n)


class LocalEngineClient(EngineClient):
    """The embedded engine of this process (an `AsyncEngine` on its worker thread)."""

    def __init__(self, engine: Any) -> None:  # AsyncEngine; typed loosely to keep torch out
        self.engine = engine
        core = engine.engine
        loaded = core.loaded
        self.info = EngineInfo(
            model=loaded.name,
            model_path=str(loaded.path),
            max_context_len=core.max_context_len,
            kv_pool_tokens=core.config.kv_pool_tokens,
            max_running_requests=core.config.max_running_requests,
        )
        self._tokenizer = loaded.tokenizer

    async def submit_many(self, items: list[Submission]) -> list[OutputStream | Exception]:
        return await self.engine.submit_many(
            [
                (
                    s.prompt,
                    s.sampling,
                    {"rid": s.rid, "priority": s.priority, "namespace": s.namespace},
                )
                for s in items
            ]
        )

    async def abort(self, rid: str) -> bool:
        return await self.engine.abort(rid)

    async def load(self) -> EngineLoad:
        s = await self.engine.stats()
        return EngineLoad(
            waiting_requests=s.waiting_requests,
            running_requests=s.running_requests,
            kv_pool_tokens=s.kv_pool_tokens,
            kv_used_tokens=s.kv_used_tokens,
            cached_tokens=s.cached_tokens,
            prompt_tokens_total=s.prompt_tokens_total,
            cached_prompt_tokens_total=s.cached_prompt_tokens_total,
            generated_tokens_total=s.generated_tokens_total,
            draft_tokens_total=s.draft_tokens_total,
            accepted_draft_tokens_total=s.accepted_draft_tokens_total,
        )

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        template_kwargs: dict[str, Any] | None = None,
    ) -> str:
        return render_chat(
            self._tokenizer,
            messages,
            tools,
            add_generation_prompt,
            continue_final_message,
            template_kwargs,
        )

    @property
    def chat_template(self) -> str | None:
        return template_text(self._tokenizer)

    async def encode(
        self, text: str, *, add_special_tokens: bool = False, fit_window: bool = True
    ) -> list[int]:
        window = self.info.max_context_len if fit_window else None
        return await self.engine.tokens.encode(text, window, add_special_tokens)

    async def encode_many(self, texts: list[str]) -> list[list[int] | Exception]:
        return await self.engine.tokens.encode_many(texts, self.info.max_context_len)

    async def decode(self, ids: list[int]) -> str:
        return await self.engine.tokens.decode(ids)

    async def token_strs(self, ids: list[int]) -> list[str]:
        return await self.engine.tokens.token_strs(ids)

    async def shutdown(self) -> None:
        await self.engine.shutdown()  # closes its tokenizer thread too
