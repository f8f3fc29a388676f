"""One request's output stream across the engines of a pool: when its engine fails, the
request resumes on another from the tokens already streamed (prompt + output so far, the rest of
its token budget), and its reader sees one stream under the original rid."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Generic, Protocol, TypeVar

from ..engine.errors import EngineUnavailableError
from ..engine.request import FinishKind, FinishReason, RequestOutput
from ..engine.sampling_params import SamplingParams
from .engine_client import OutputStream, Submission
from .placement import PlacementItem


class Engine(Protocol):
    """The engine a stream runs on, as the stream sees it."""

    # Set when the engine is taken out of rotation: the stream stops waiting on it.
    down: asyncio.Event


E = TypeVar("E", bound=Engine)


class StreamOwner(Protocol[E]):
    """What a `PooledStream` asks of the pool that placed it (`EnginePool` implements it)."""

    def take_out(self, engine: E, why: str) -> None:
        """The engine failed under this stream: no more work for it until it answers again."""

    async def place_again(self, item: PlacementItem, sub: Submission) -> tuple[E, OutputStream]:
        """Submit the request (prompt extended by the output so far) on a healthy engine."""

    def release(self, engine: E, item: PlacementItem) -> None:
        """The request no longer runs on `engine`: its load there ends."""

    def forget(self, rid: str) -> None:
        """The stream is over: the pool stops tracking it."""


class PooledStream(Generic[E]):
    """One request's outputs across engines: when its engine fails, it resumes elsewhere from
    the tokens already streamed, and the reader sees one stream under the original rid."""

    def __init__(
        self,
        pool: StreamOwner[E],
        sub: Submission,
        item: PlacementItem,
        member: E | None,
        stream: OutputStream | None,
    ) -> None:
        self.pool, self.sub, self.item = pool, sub, item
        self.rid = item.rid
        self.member, self.stream = member, stream
        self.prompt_ids = list(item.prompt_ids)
        self.output_ids: list[int] = []
        self.attempt = 0
        self.closed = False
        self._gen = self._outputs()

    def __aiter__(self) -> AsyncIterator[RequestOutput]:
        return self._gen

    async def _outputs(self) -> AsyncIterator[RequestOutput]:
        try:
            while not self.closed:
                if self.stream is None:
                    out = await self._resume()
                    if out is not None:  # nothing left to generate
                        yield out
                        return
                try:
                    async for out in _until_down(self.stream, self.member.down):
                        self.output_ids += out.new_token_ids
                        out = dataclasses.replace(
                            out,
                            rid=self.rid,
                            prompt_tokens=len(self.prompt_ids),
                            completion_tokens=len(self.output_ids),
                            cached_tokens=min(out.cached_tokens, len(self.prompt_ids)),
                        )
                        yield out
                        if out.finish_reason is not None:
                            return
                        if self.closed:  # aborted while the reader held this output
                            break
                    if not self.closed:
                        return
                except EngineUnavailableError as exc:
                    if self.closed:  # our own abort cut the stream
                        break
                    self.pool.take_out(self.member, str(exc))
                    self._release()
            yield self._last(FinishReason(FinishKind.ABORT, message="aborted"))
        finally:
            self._release()
            self.pool.forget(self.rid)

    async def _resume(self) -> RequestOutput | None:
        """Submit prompt + output so far elsewhere; an output when nothing is left to do."""
        left = self.sub.sampling.max_new_tokens - len(self.output_ids)
        if left <= 0:
            return self._last(FinishReason(FinishKind.LENGTH, self.sub.sampling.max_new_tokens))
        self.attempt += 1
        ids = self.prompt_ids + self.output_ids
        sub = dataclasses.replace(
            self.sub,
            prompt=ids,
            rid=f"{self.rid}~{self.attempt}",
            sampling=_resumed(self.sub.sampling, left, len(self.output_ids)),
        )
        self.item = dataclasses.replace(self.item, prompt_ids=ids, max_new_tokens=left)
        self.member, self.stream = await self.pool.place_again(self.item, sub)
        if self.closed:  # aborted while we looked for an engine
            self._release()
            return self._last(FinishReason(FinishKind.ABORT, message="aborted"))
        return None

    def _last(self, reason: FinishReason) -> RequestOutput:
        return RequestOutput(
            self.rid, [], "", reason, len(self.prompt_ids), len(self.output_ids), 0
        )

    def _release(self) -> None:
        if self.member is not None and self.stream is not None:
            self.pool.release(self.member, self.item)
            stream, self.stream, self.member = self.stream, None, None
            task = asyncio.get_running_loop().create_task(_close_quietly(stream))
            task.add_done_callback(lambda t: None)

    async def aclose(self) -> None:
        """Aborts the request on its engine. A reader, in this task or another, gets a final
        abort output next (the generator itself is left to it: closing a generator another
        task is running is an error)."""
        if self.closed:
            return
        self.closed = True
        member, stream = self.member, self.stream
        if member is not None and stream is not None:
            self.pool.release(member, self.item)
            self.member = self.stream = None
            with contextlib.suppress(Exception):
                await stream.aclose()
        self.pool.forget(self.rid)


async def _close_quietly(stream: OutputStream) -> None:
    with contextlib.suppress(Exception):
        await stream.aclose()


async def _until_down(stream: OutputStream, down: asyncio.Event) -> AsyncIterator[RequestOutput]:
    """`stream`'s outputs, or EngineUnavailableError as soon as its engine is marked down (an
    unresponsive engine would otherwise hold the request until a read timeout)."""
    it = aiter(stream)
    while True:
        nxt = asyncio.ensure_future(anext(it))
        dn = asyncio.ensure_future(down.wait())
        done, _ = await asyncio.wait({nxt, dn}, return_when=asyncio.FIRST_COMPLETED)
        if nxt in done:
            dn.cancel()
            try:
                out = nxt.result()
            except StopAsyncIteration:
                return
            yield out
            continue
        nxt.cancel()
        with contextlib.suppress(BaseException):
            await nxt
        raise EngineUnavailableError("engine taken out of rotation")


def _resumed(sampling: SamplingParams, left: int, done: int) -> SamplingParams:
    """The sampling of a request resumed after `done` more output tokens, `left` to go: a
    constraint starts after the output so far, now part of the prompt, and `min_new_tokens`
    counts what is still owed. (Frequency and presence penalties then see only the new output:
    the earlier one is prompt to the engine.)"""
    tail = sampling.constrained_prompt_tail + done if sampling.constraint else 0
    return dataclasses.replace(
        sampling,
        max_new_tokens=left,
        constrained_prompt_tail=tail,
        min_new_tokens=max(0, sampling.min_new_tokens - done),
    )
