"""`RemoteStream`: one request's SSE stream from an engine on SGLang's native runtime protocol,
as `RequestOutput` deltas, and what SGLang's finish reasons and error codes mean in our terms.

A stream fails with `EngineUnavailableError` (carrying the tokens committed so far) when the
connection breaks, the stream ends early or the engine is silent for `stream_read_timeout`
seconds; with `EngineProtocolError` for an event it cannot decode. Pure Python (no torch).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Protocol

import httpx

from ..engine.errors import (
    EngineError,
    EngineOverloadedError,
    EngineUnavailableError,
    InvalidRequestError,
)
from ..engine.request import FinishKind, FinishReason, RequestOutput, TokenLogprob
from ..sglang_protocol import StreamDecoder, last_logprobs, stream_error

log = logging.getLogger(__name__)


class EngineProtocolError(EngineUnavailableError):
    """The engine answered, but not as an SGLang 0.5.x runtime does."""


def typed_error(url: str, status: int | None, message: str) -> EngineError | None:
    """The typed error an engine's HTTP status (or a stream error event's code) means; None for
    an engine failure (5xx): the caller raises `EngineUnavailableError` with what it committed."""
    if status in (429, 503):
        return EngineOverloadedError(f"engine {url}: {message}")
    if status is None or 400 <= status < 500:
        return InvalidRequestError(message)  # the engine's own words, for the client
    return None


def finish_reason_from_sglang(d: Any) -> FinishReason | None:
    """SGLang's `meta_info.finish_reason` ({"type": "stop", "matched": id or text},
    {"type": "length", "length": n}, {"type": "abort", "message": ...}) -> ours."""
    if not d:
        return None
    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "stop":
        return FinishReason(FinishKind.STOP, matched=d.get("matched"))
    if kind == "length":
        return FinishReason(FinishKind.LENGTH, matched=d.get("length"))
    message = d.get("message") if kind == "abort" else f"unknown finish reason {d!r}"
    return FinishReason(FinishKind.ABORT, message=str(message or "aborted"))


def describe(exc: BaseException) -> str:
    """An exception for a log line or an error message: its class, and its text if any."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class StreamOwner(Protocol):
    """What a `RemoteStream` asks of the client that opened it (`RemoteEngineClient`)."""

    url: str  # the engine's, for messages

    def abort_later(self, rid: str) -> None:
        """Tell the engine to stop `rid` without waiting for its answer."""

    def stream_done(self, rid: str) -> None:
        """The stream is over: the client stops tracking it."""


class RemoteStream:
    """One request's SSE stream as `RequestOutput` deltas. `aclose()` aborts it if running.

    `incremental`: the engine streams ids and text since the previous event, not cumulative
    ones; `read_timeout` is the longest silence (`stream_read_timeout`, for messages: the
    response's own timeout enforces it); `drain_timeout` how long to wait for `[DONE]` after the
    last output."""

    def __init__(
        self,
        owner: StreamOwner,
        rid: str,
        prompt_ids: list[int],
        response: httpx.Response,
        *,
        incremental: bool,
        read_timeout: float,
        drain_timeout: float,
    ) -> None:
        self.rid = rid
        self._owner, self._prompt_ids, self._response = owner, prompt_ids, response
        self._read_timeout, self._drain_timeout = read_timeout, drain_timeout
        self._lines = response.aiter_lines()
        self._decoder = StreamDecoder(incremental)  # the text and ids committed so far
        self._done = False  # finished, failed or closed: nothing more to read
        self._closed = False

    def __aiter__(self) -> RemoteStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self._done:
            raise StopAsyncIteration
        try:
            out = await self._read()
        except asyncio.CancelledError:
            raise  # this read was given up; the reader closes the stream next
        except Exception:
            if self._closed:  # aclose() from another task cut the read short
                return self._output([], "", FinishReason(FinishKind.ABORT, message="aborted"), {})
            self._done = True
            await self._release()
            raise
        if out.finish_reason is not None:
            self._done = True
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(self._drain(), self._drain_timeout)
            await self._release()
        return out

    async def _read(self) -> RequestOutput:
        while True:
            data = await self._next_data()
            if data == "[DONE]":
                raise self._lost("the stream ended before the request finished")
            try:
                event = json.loads(data)
                error = stream_error(event)
                out = None if error else self._delta(event)
            except (ValueError, LookupError, TypeError, AttributeError) as exc:
                self._owner.abort_later(self.rid)
                why = f"bad stream event {data[:200]!r}: {exc}"
                raise self._lost(why, EngineProtocolError) from exc
            if error:
                raise self._event_error(*error)
            if out.finish_reason is not None or out.new_token_ids or out.new_text:
                return out

    async def _next_data(self) -> str:
        while True:
            try:
                line = await anext(self._lines)
            except StopAsyncIteration:
                raise self._lost("the connection closed before the request finished") from None
            except httpx.ReadTimeout:
                self._owner.abort_later(self.rid)  # it may still be running: free its KV
                t = self._read_timeout
                raise self._lost(f"no output for {t:g} s (stream_read_timeout)") from None
            except httpx.TransportError as exc:
                raise self._lost(f"connection lost: {describe(exc)}") from exc
            if line.startswith("data:"):  # blank separators and comments are skipped
                return line[5:].strip()

    def _delta(self, event: dict[str, Any]) -> RequestOutput:
        lost = self._decoder.ids_lost
        text, ids = self._decoder.feed(event)
        if self._decoder.ids_lost and not lost:
            log.warning("engine %s: request %s: its stream lost ids", self._owner.url, self.rid)
        meta = event["meta_info"]
        out = self._output(ids, text, finish_reason_from_sglang(meta.get("finish_reason")), meta)
        entries = last_logprobs(meta, len(ids))
        if entries is not None:
            out.logprobs = [TokenLogprob(t, lp, top) for t, lp, top in entries]
        return out

    def _output(self, ids: list[int], text: str, finish: Any, meta: dict) -> RequestOutput:
        prompt = meta.get("prompt_tokens", len(self._prompt_ids))
        completion = meta.get("completion_tokens", len(self._decoder.ids))
        return RequestOutput(
            self.rid, ids, text, finish, prompt, completion, meta.get("cached_tokens", 0)
        )

    def _event_error(self, message: str, code: int | None) -> EngineError:
        # No status: SGLang 0.5.5's events for a request it refused (it validates in the stream).
        return typed_error(self._owner.url, code, message) or self._lost(f"error {code}: {message}")

    def _lost(self, why: str, cls: type = EngineUnavailableError) -> EngineUnavailableError:
        d = self._decoder
        msg = f"engine {self._owner.url}: request {self.rid}: {why}"
        return cls(msg, prompt_ids=self._prompt_ids, output_ids=d.ids, output_text=d.text)

    async def _drain(self) -> None:
        async for _ in self._lines:  # `[DONE]` and the end: then the connection is reused
            pass

    async def _release(self) -> None:
        self._owner.stream_done(self.rid)
        with contextlib.suppress(Exception):
            await self._response.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._done:
            self._done = True
            self._owner.abort_later(self.rid)
        await self._release()
