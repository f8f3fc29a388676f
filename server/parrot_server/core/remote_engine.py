"""`RemoteEngineClient`: an engine in another process (a `parrot engine`, or an SGLang 0.5.x
worker) driven over SGLang's native HTTP runtime protocol (`sglang_protocol.py`).

Prompts are tokenized here and sent as `input_ids`, so a request can resume on another engine
from exact token ids. Each request's stream is a `RemoteStream` (`remote_stream.py`); the
engine's info is read by `remote_info.py`, its tokenizer found by `remote_tokenizer.py`. Every
HTTP call has a timeout. Pure Python: nothing here imports torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from ..engine.errors import (
    EngineError,
    EngineOverloadedError,
    EngineUnavailableError,
    InvalidRequestError,
    PromptTooLongError,
)
from ..engine.tokenizer import TokenizerNotFoundError, read_chat_template
from ..engine.tokenizer_thread import TokenizerThread
from ..sglang_protocol import (
    LoadEntry,
    error_message,
    parse_loads,
)
from ..sglang_sampling import logprob_fields, sampling_params_body
from .engine_client import (
    EngineClient,
    EngineInfo,
    EngineLoad,
    EngineStatus,
    OutputStream,
    Submission,
    render_chat,
    template_text,
)
from .remote_info import engine_info, get_json
from .remote_stream import (
    EngineProtocolError,
    RemoteStream,
    describe,
    finish_reason_from_sglang,
    typed_error,
)
from .remote_tokenizer import find_tokenizer, load_tokenizer

__all__ = [
    "EngineProtocolError",
    "RemoteEngineClient",
    "RemoteEngineConfig",
    "TokenizerNotFoundError",
    "finish_reason_from_sglang",
    "load_tokenizer",
    "sampling_params_body",
    "typed_error",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteEngineConfig:
    """Every limit of one remote engine's client; seconds unless named otherwise."""

    connect_timeout: float = 5.0  # TCP connect
    request_timeout: float = 30.0  # each read / write of info, load, abort and submit calls
    health_timeout: float = 5.0  # GET /health (SGLang 0.5.5 generates a token there)
    stream_read_timeout: float = 120.0  # longest silence in a stream, the first event included
    drain_timeout: float = 1.0  # wait for `[DONE]` after the last event (to reuse the connection)
    max_connections: int = 1024  # each running stream holds one; beyond: overloaded

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if not getattr(self, f.name) > 0:
                raise ValueError(f"RemoteEngineConfig.{f.name} must be > 0")


class RemoteEngineClient(EngineClient):
    """One engine on SGLang's native protocol at `url`. Build it with `await connect(url)`."""

    def __init__(
        self,
        url: str,
        tokenizer: Any,
        info: EngineInfo,
        config: RemoteEngineConfig | None = None,
        *,
        server_info: dict[str, Any] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.tokenizer = tokenizer  # an HF tokenizer: chat templates, on the event loop's thread
        self.info = info
        self.config = config = config or RemoteEngineConfig()
        s = server_info or {}
        # Priorities only where they are honoured: SGLang can be told to reject them otherwise.
        self._priorities = bool(s.get("enable_priority_scheduling"))
        self._low_first = bool(s.get("schedule_low_priority_values_first"))
        self._incremental = bool(s.get("incremental_streaming_output"))
        self._http = http or _http_client(self.url, config)
        self._streams: dict[str, RemoteStream] = {}
        self._aborts: set[asyncio.Task] = set()
        self._load_path: str | None = None  # whichever load route the engine has

    @classmethod
    async def connect(
        cls,
        url: str,
        tokenizer: Any = None,
        *,
        model: str | os.PathLike | None = None,
        config: RemoteEngineConfig | None = None,
        chat_template: str | None = None,
        api_key: str | None = None,
    ) -> RemoteEngineClient:
        """Read the engine's `/model_info` and `/server_info` and load its tokenizer, unless
        given (an object, or a path for `load_tokenizer`): the engine's `tokenizer_path` if it
        exists here, else `model` (a local GGUF file or HF dir), else that path as a hub id.
        `chat_template` (a Jinja file or text) replaces the tokenizer's; `api_key` is sent as
        `Authorization: Bearer` with every request."""
        config = config or RemoteEngineConfig()
        url = url.rstrip("/")
        http = _http_client(url, config, api_key)
        try:
            model_info = await get_json(http, url, "/model_info", "/get_model_info")
            server_info = await get_json(http, url, "/server_info", "/get_server_info")
            info = await engine_info(http, url, model_info, server_info)
            if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
                tokenizer = await asyncio.to_thread(
                    find_tokenizer, url, tokenizer, model_info, model
                )
            if chat_template is not None:
                tokenizer.chat_template = read_chat_template(chat_template)
        except BaseException:
            await http.aclose()
            raise
        return cls(url, tokenizer, info, config, server_info=server_info, http=http)

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
            self.tokenizer,
            messages,
            tools,
            add_generation_prompt,
            continue_final_message,
            template_kwargs,
        )

    @property
    def chat_template(self) -> str | None:
        return template_text(self.tokenizer)

    @functools.cached_property
    def _tokens(self) -> TokenizerThread:
        """Made at the first use, on the event loop: the only thread that uses `tokenizer`
        (shared by the clients of one model) apart from the threads' own copies."""
        return TokenizerThread(self.tokenizer)

    async def encode(
        self, text: str, *, add_special_tokens: bool = False, fit_window: bool = True
    ) -> list[int]:
        window = self.info.max_context_len if fit_window else None
        return await self._tokens.encode(text, window, add_special_tokens)

    async def encode_many(self, texts: list[str]) -> list[list[int] | Exception]:
        return await self._tokens.encode_many(texts, self.info.max_context_len)

    async def decode(self, ids: list[int]) -> str:
        return await self._tokens.decode(ids)

    async def token_strs(self, ids: list[int]) -> list[str]:
        return await self._tokens.token_strs(ids)

    # -- requests -------------------------------------------------------------------------------
    async def submit_many(self, items: list[Submission]) -> list[OutputStream | Exception]:
        """Sent concurrently; each gets its stream once the engine accepted it (HTTP 200). An
        SGLang worker validates inside the stream: what it refuses beyond the context-window
        check made here comes from the stream's first read, as `InvalidRequestError`."""
        tasks = [asyncio.ensure_future(self._submit(s)) for s in items]
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:  # close what was opened already: nothing left running
            for t in tasks:
                t.cancel()
            for r in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(r, RemoteStream):
                    await r.aclose()
            raise
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, Exception):
                raise r
        return results

    async def _submit(self, s: Submission) -> RemoteStream:
        ids = list(s.prompt) if isinstance(s.prompt, list) else await self.encode(s.prompt)
        if not ids:
            raise InvalidRequestError("the prompt is empty")
        if len(ids) >= self.info.max_context_len:  # SGLang would say so only inside the stream
            raise PromptTooLongError(
                f"prompt has {len(ids)} tokens; the context window of {self.info.model} at "
                f"{self.url} is {self.info.max_context_len} tokens"
            )
        rid = s.rid or uuid.uuid4().hex
        body: dict[str, Any] = {
            "input_ids": ids,
            "sampling_params": sampling_params_body(s.sampling),
            "rid": rid,
            "stream": True,
            **logprob_fields(s.sampling),
        }
        if s.namespace is not None:
            body["extra_key"] = s.namespace
        if self._priorities:
            body["priority"] = -s.priority if self._low_first else s.priority
        cfg = self.config
        timeout = httpx.Timeout(
            cfg.request_timeout, connect=cfg.connect_timeout, read=cfg.stream_read_timeout
        )
        try:
            response = await self._http.send(
                self._http.build_request("POST", "/generate", json=body, timeout=timeout),
                stream=True,
            )
        except httpx.PoolTimeout as exc:
            raise EngineOverloadedError(
                f"engine {self.url}: {cfg.max_connections} requests in flight "
                "(RemoteEngineConfig.max_connections)"
            ) from exc
        except httpx.TransportError as exc:
            raise self._unavailable(f"POST /generate: {describe(exc)}", ids) from exc
        if response.status_code != 200:
            try:
                raw = await response.aread()
            except httpx.TransportError:
                raw = b""
            finally:
                await response.aclose()
            raise self._status_error(response.status_code, raw, ids)
        self._streams[rid] = stream = RemoteStream(
            self,
            rid,
            ids,
            response,
            incremental=self._incremental,
            read_timeout=cfg.stream_read_timeout,
            drain_timeout=cfg.drain_timeout,
        )
        return stream

    def _unavailable(
        self, why: str, prompt_ids: list[int], output_ids: list[int] | None = None, text: str = ""
    ) -> EngineUnavailableError:
        msg = f"engine {self.url}: {why}"
        return EngineUnavailableError(
            msg, prompt_ids=prompt_ids, output_ids=output_ids, output_text=text
        )

    def _status_error(self, status: int, raw: bytes, prompt_ids: list[int]) -> EngineError:
        try:
            message, _ = error_message(json.loads(raw))
        except ValueError:
            message = None
        message = message or raw.decode(errors="replace").strip()[:500] or f"HTTP {status}"
        if status == 404:
            return EngineProtocolError(f"engine {self.url}: no /generate (HTTP 404): {message}")
        error = typed_error(self.url, status, message)
        return error or self._unavailable(f"HTTP {status}: {message}", prompt_ids)

    async def abort(self, rid: str) -> bool:
        """Whether `rid` was running (SGLang does not say: then whether the engine was told)."""
        try:
            r = await self._http.post("/abort_request", json={"rid": rid})
        except httpx.HTTPError as exc:
            log.debug("abort %s on %s failed: %s", rid, self.url, describe(exc))
            return False
        with contextlib.suppress(ValueError, AttributeError):  # SGLang's body is empty
            if isinstance(aborted := r.json().get("aborted"), list):
                return rid in aborted  # our engine says which requests it aborted
        return r.status_code == 200

    def abort_later(self, rid: str) -> None:
        """Abort in the background: a hung engine must not hold up the caller (a failover)."""
        task = asyncio.get_running_loop().create_task(self.abort(rid))
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)

    def stream_done(self, rid: str) -> None:
        self._streams.pop(rid, None)

    # -- state ----------------------------------------------------------------------------------
    async def load(self) -> EngineLoad:
        """From `/get_load` (ours, SGLang 0.5.5) or `/v1/loads` (SGLang 0.5.23). SGLang reports
        no cached-token count and no running totals (0 here), and 0.5.5's used tokens are those
        held by requests plus the waiting prompts' (the prefix cache not included)."""
        paths = [self._load_path] if self._load_path else ["/get_load", "/v1/loads?include=core"]
        for path in paths:
            try:
                r = await self._http.get(path)
            except httpx.HTTPError as exc:
                raise self._unavailable(f"GET {path}: {describe(exc)}", []) from exc
            if r.status_code == 404 and path != paths[-1]:
                continue
            if r.status_code != 200:
                raise self._unavailable(f"GET {path}: HTTP {r.status_code}", [])
            self._load_path = path
            try:
                return self._sum_loads(parse_loads(r.json()))
            except (ValueError, KeyError, TypeError) as exc:
                raise EngineProtocolError(f"engine {self.url}: bad {path} answer: {exc}") from exc
        raise AssertionError("unreachable")

    def _sum_loads(self, entries: list[LoadEntry]) -> EngineLoad:
        def total(name: str, default: int = 0) -> int:
            vals = [v for e in entries if (v := getattr(e, name)) is not None]
            return sum(vals) if vals else default

        pool = total("num_total_tokens", self.info.kv_pool_tokens)
        return EngineLoad(
            waiting_requests=total("num_waiting_reqs"),
            running_requests=total("num_reqs") - total("num_waiting_reqs"),
            kv_pool_tokens=pool,
            kv_used_tokens=min(pool, total("num_used_tokens", total("num_tokens"))),
            cached_tokens=total("num_cached_tokens"),
            prompt_tokens_total=total("prompt_tokens_total"),
            cached_prompt_tokens_total=total("cached_prompt_tokens_total"),
            generated_tokens_total=total("generated_tokens_total"),
            draft_tokens_total=total("draft_tokens_total"),
            accepted_draft_tokens_total=total("accepted_draft_tokens_total"),
        )

    async def health(self) -> bool:
        try:
            r = await self._http.get("/health", timeout=self.config.health_timeout)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def engines(self) -> list[EngineStatus]:
        return [EngineStatus(self.url, self.info.model, await self.health(), len(self._streams))]

    async def shutdown(self) -> None:
        """Abort this client's running requests and close its connections. The remote engine
        keeps running: it is not ours to stop."""
        for stream in list(self._streams.values()):
            await stream.aclose()
        if self._aborts:
            await asyncio.wait(set(self._aborts), timeout=self.config.request_timeout)
        await self._http.aclose()
        if "_tokens" in self.__dict__:
            self._tokens.close()


def _http_client(
    url: str, config: RemoteEngineConfig, api_key: str | None = None
) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=config.max_connections,
        max_keepalive_connections=min(64, config.max_connections),
    )
    timeout = httpx.Timeout(config.request_timeout, connect=config.connect_timeout)
    # trust_env=False: an HTTP(S)_PROXY meant for the internet must not reroute engine traffic.
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    return httpx.AsyncClient(
        base_url=url, timeout=timeout, limits=limits, headers=headers, trust_env=False
    )
