"""Coalesces the engine submissions made in one event-loop turn into one `submit_many`.

The executor starts every call that is ready in the same turn (the maps of one reduce, a whole
task group); each call's task renders its prompt and submits. Sent one by one, the first
request would start an engine step alone and the rest would wait for the next one; sent
together, the engine admits the whole group into the same step.
"""

from __future__ import annotations

import asyncio

from .engine_client import EngineClient, OutputStream, Submission


class SubmitBatcher:
    def __init__(self, engine: EngineClient) -> None:
        self.engine = engine
        self._pending: list[tuple[Submission, asyncio.Future]] = []

    async def submit(self, item: Submission) -> OutputStream:
        """Like `EngineClient.submit`: the stream, or the typed error for this item."""
        fut = asyncio.get_running_loop().create_future()
        if not self._pending:
            # Runs after the tasks already scheduled in this turn had their chance to add.
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((item, fut))
        return await fut

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(
            self.engine.submit_many([i for i, _ in batch])
        )
        task.add_done_callback(lambda t: self._deliver(batch, t))

    @staticmethod
    def _deliver(batch: list[tuple[Submission, asyncio.Future]], task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:
            exc = asyncio.CancelledError() if task.cancelled() else task.exception()
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), result in zip(batch, task.result(), strict=True):
            if fut.done():  # its caller was cancelled meanwhile: nobody will read this stream
                if not isinstance(result, BaseException):
                    asyncio.get_running_loop().create_task(result.aclose())
            elif isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
