"""Requests made in one event-loop turn go out as one batch call.

The executor starts every call that is ready in the same turn (the maps of one reduce, a whole
task group); each call's task tokenizes its prompt, then submits it. Sent one by one, the first
request would start an engine step alone and the rest would wait for the next one; batched per
turn, the prompts are tokenized in one pass and the engine admits the whole group into the same
step. A batch's results all arrive in one callback, so the tasks also reach the next batcher in
one turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class TurnBatcher(Generic[In, Out]):
    def __init__(
        self,
        run: Callable[[list[In]], Awaitable[list[Out | Exception]]],
        orphan: Callable[[Out], None] | None = None,
    ) -> None:
        """`run` answers a batch item by item (a result or that item's error); `orphan` is
        given a result whose caller was cancelled while the batch ran (to release it)."""
        self._run = run
        self._orphan = orphan
        self._pending: list[tuple[In, asyncio.Future]] = []

    async def __call__(self, item: In) -> Out:
        """This item's result, or its error raised."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if not self._pending:
            # Runs after the tasks already scheduled in this turn had their chance to add.
            loop.call_soon(self._flush)
        self._pending.append((item, fut))
        return await fut

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._run([i for i, _ in batch]))
        task.add_done_callback(lambda t: self._deliver(batch, t))

    def _deliver(self, batch: list[tuple[In, asyncio.Future]], task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:
            exc = asyncio.CancelledError() if task.cancelled() else task.exception()
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), result in zip(batch, task.result(), strict=True):
            if fut.done():  # its caller was cancelled meanwhile: nobody will read this result
                if self._orphan is not None and not isinstance(result, BaseException):
                    self._orphan(result)
            elif isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
