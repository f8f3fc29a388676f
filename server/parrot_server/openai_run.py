"""`ChoiceRun`: one submitted `/v1` engine request (one choice of `n`), iterated inside
`async with`; leaving the block early (error, disconnect, cancellation) aborts it, so its KV
is freed at once. Records the request's metrics once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from parrot_integrations.protocol.openai import PromptTokensDetails, Usage

from .core.engine_client import OutputStream
from .core.errors import ServerShuttingDownError
from .core.metrics import Metrics
from .engine.errors import RequestAbortedError
from .engine.request import FinishKind, RequestOutput, TokenLogprob

# Cleanup tasks that must outlive a cancelled caller (the loop keeps only weak references).
_background: set[asyncio.Task] = set()


class ChoiceRun:
    def __init__(
        self,
        index: int,
        stream: OutputStream,
        metrics: Metrics | None,
        objective: str,
        start: float,
        live: set[ChoiceRun],
    ) -> None:
        self.index = index  # the choice's `index`
        self.stream, self.metrics, self.objective, self.start = stream, metrics, objective, start
        self.live = live  # the service's runs in flight, this one until it ends
        live.add(self)
        self.stopped = False  # ended by the server's shutdown
        self.rid = stream.rid
        self.ttft: float | None = None
        self.last: RequestOutput | None = None
        self.finish_reason: str | None = None  # "stop" | "length" once finished
        self.called_tools = False  # the answer is tool calls: its finish reason says so
        self.logprobs: list[TokenLogprob] = []  # every token's so far, when the request asked
        self.ended = False  # its metrics recorded and its request closed

    def __aiter__(self) -> AsyncIterator[RequestOutput]:
        return self._outputs()

    async def _outputs(self) -> AsyncIterator[RequestOutput]:
        async for out in self.stream:
            if self.ttft is None and out.new_token_ids:
                self.ttft = time.monotonic() - self.start
            self.last = out
            self.logprobs += out.logprobs or ()
            reason = out.finish_reason
            if reason is not None:
                if reason.kind is FinishKind.ABORT and self.stopped:
                    raise ServerShuttingDownError("the server is shutting down")
                if reason.kind is FinishKind.ABORT:
                    raise RequestAbortedError(f"request aborted: {reason.message or 'aborted'}")
                self.finish_reason = "stop" if reason.kind is FinishKind.STOP else "length"
            yield out

    @property
    def chat_finish_reason(self) -> str | None:
        if self.finish_reason == "stop" and self.called_tools:
            return "tool_calls"
        return self.finish_reason

    async def __aenter__(self) -> ChoiceRun:
        return self

    async def stop(self) -> None:
        self.stopped = True
        await self.stream.aclose()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> None:
        if self.ended:
            return
        self.ended = True
        self.live.discard(self)
        if self.finish_reason is not None:
            outcome = "ok"
        elif exc_type is None or issubclass(
            exc_type, (asyncio.CancelledError, GeneratorExit, RequestAbortedError)
        ):
            outcome = "cancelled"
        else:
            outcome = "error"
        if self.metrics is not None:
            self.metrics.observe(
                api="openai",
                objective=self.objective,
                outcome=outcome,
                latency=time.monotonic() - self.start,
                ttft=self.ttft,
            )
        if self.finish_reason is None:
            # Shielded: under a cancelled task the abort must still reach the engine.
            task = asyncio.ensure_future(self.stream.aclose())
            _background.add(task)
            task.add_done_callback(_background.discard)
            await asyncio.shield(task)


async def end_runs(runs: list[ChoiceRun]) -> None:
    """Ends runs whose stream was closed, maybe before it entered them (each ends once)."""
    for run in runs:
        await run.__aexit__(GeneratorExit, None, None)


async def merged(runs: list[ChoiceRun]) -> AsyncIterator[tuple[ChoiceRun, RequestOutput]]:
    """Every run's outputs as they come, each with its run (one run: plainly iterated)."""
    if len(runs) == 1:
        async for out in runs[0]:
            yield runs[0], out
        return
    iters = {run: aiter(run) for run in runs}
    pending = {asyncio.ensure_future(anext(it)): run for run, it in iters.items()}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=lambda t: pending[t].index):
                run = pending.pop(task)
                try:
                    out = task.result()
                except StopAsyncIteration:
                    continue
                pending[asyncio.ensure_future(anext(iters[run]))] = run
                yield run, out
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def usage_of(runs: list[ChoiceRun]) -> Usage:
    """The prompt counted once (with its first choice's cached tokens), outputs summed."""
    first = runs[0].last
    prompt = first.prompt_tokens if first else 0
    completion = sum(r.last.completion_tokens for r in runs if r.last)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(
            cached_tokens=first.cached_tokens if first else 0
        ),
    )


def response_id(runs: list[ChoiceRun]) -> str:
    """The engine request id, or with several choices the id their ids extend."""
    return runs[0].rid if len(runs) == 1 else runs[0].rid.rsplit("-", 1)[0]
