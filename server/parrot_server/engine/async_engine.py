"""asyncio front of the engine: one worker thread steps the engine, coroutines talk to it.

Every engine mutation runs on the worker thread (commands are queued to it), so the engine
itself needs no locks. Outputs come back to the caller's event loop through its queue. Text
prompts are tokenized before they are queued, on a thread of their own (`TokenizerThread`): the
worker thread gets token ids and only steps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from .engine import Engine
from .errors import EngineUnavailableError
from .request import FinishKind, FinishReason, RequestOutput, TokenLogprob
from .sampling_params import SamplingParams
from .stats import EngineStats
from .tokenizer_thread import TokenizerThread

log = logging.getLogger(__name__)
T = TypeVar("T")


class AsyncEngine:
    def __init__(self, make: Callable[[], Engine]) -> None:
        """Starts the worker thread, which builds the engine with `make()` and then steps it;
        returns once it is built (raising what `make` raised). Built there, not here: the
        thread that steps the engine must be the one that ran its torch work at load, so that
        OpenMP keeps a single team of threads spinning between steps; a second team, left on
        the loading thread, makes every parallel region wait for sleeping threads to wake."""
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future]] = (
            queue.SimpleQueue()
        )
        self._wake = threading.Event()
        self._stopping = False
        # Priorities of submissions on their way to the engine (each batch's highest), which
        # the engine reads between layers to stop a less urgent step.
        self._arriving: list[int] = []
        self._arriving_lock = threading.Lock()
        built: concurrent.futures.Future[Engine] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(make, built), name="parrot-engine", daemon=True
        )
        self._thread.start()
        self.engine = built.result()
        self.tokens = TokenizerThread(self.engine.tokenizer)

    def _run(self, make: Callable[[], Engine], built: concurrent.futures.Future) -> None:
        try:
            self.engine = make()
        except BaseException as exc:
            built.set_exception(exc)
            return
        built.set_result(self.engine)
        self._loop()

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    # -- worker thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping:
            self._run_commands()
            if self.engine.has_work():
                try:
                    self.engine.step(self._most_urgent_arrival)
                except Exception as exc:  # a bug must not hang every client: fail what is in flight
                    log.exception("engine step failed; aborting in-flight requests")
                    for rid in list(self.engine.requests):
                        self.engine.abort(rid, f"engine error: {exc}")
            else:
                self._wake.wait(timeout=0.5)
                self._wake.clear()
        self._run_commands()

    def _most_urgent_arrival(self) -> int | None:
        with self._arriving_lock:
            return max(self._arriving, default=None)

    def _run_commands(self) -> None:
        while True:
            try:
                fn, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:
                    fut.set_exception(exc)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn(engine)`-style code on the engine thread and await its result."""
        if self._stopping:
            raise EngineUnavailableError("the engine is shut down (the server is stopping)")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((fn, fut))
        self._wake.set()
        return await asyncio.wrap_future(fut)

    # -- API ----------------------------------------------------------------------------------
    async def submit(
        self, prompt: list[int] | str | None, sampling: SamplingParams | None = None, **kwargs: Any
    ) -> RequestStream:
        """Queue a request (see `Engine.submit` for the keyword arguments). Bad input raises
        here, before anything streams; iterate the returned stream for the outputs."""
        (result,) = await self.submit_many([(prompt, sampling, kwargs)])
        if isinstance(result, BaseException):
            raise result
        return result

    async def submit_many(
        self, items: list[tuple[list[int] | str | None, SamplingParams | None, dict[str, Any]]]
    ) -> list[RequestStream | Exception]:
        """Queue several requests in one engine command, so the scheduler admits them into the
        same step (a task group starts together). Each item gets its stream or its own error."""
        loop = asyncio.get_running_loop()
        queues = [asyncio.Queue() for _ in items]
        prompts: list[Any] = [prompt for prompt, _, _ in items]
        texts = [k for k, p in enumerate(prompts) if isinstance(p, str)]
        if texts:  # one pass; a text too long for the window gets its error, the others go in
            encoded = await self.tokens.encode_many(
                [prompts[k] for k in texts], self.engine.max_context_len
            )
            for k, ids in zip(texts, encoded, strict=True):
                prompts[k] = ids

        def callback(outputs: asyncio.Queue) -> Callable[[RequestOutput], None]:
            return lambda out: loop.call_soon_threadsafe(outputs.put_nowait, out)

        def submit_all() -> list[Any]:
            results: list[Any] = []
            for prompt, (_, sampling, kwargs), outputs in zip(prompts, items, queues, strict=True):
                if isinstance(prompt, Exception):
                    results.append(prompt)
                    continue
                try:
                    req = self.engine.submit(
                        prompt, sampling, on_output=callback(outputs), **kwargs
                    )
                    results.append(req.rid)
                except Exception as exc:  # this item's error; the others still go in
                    results.append(exc)
            return results

        # Noted from before it is queued until it has been run (or called off): a step that
        # reads it meanwhile stops for it, and the scheduler then serves it first.
        top = max((kwargs.get("priority", 0) for _, _, kwargs in items), default=0)
        with self._arriving_lock:
            self._arriving.append(top)
        try:
            results = await self.call(submit_all)
        finally:
            with self._arriving_lock:
                self._arriving.remove(top)
        return [
            r if isinstance(r, Exception) else RequestStream(self, r, q)
            for r, q in zip(results, queues, strict=True)
        ]

    async def generate(
        self, prompt: list[int] | str | None, sampling: SamplingParams | None = None, **kwargs: Any
    ) -> AsyncIterator[RequestOutput]:
        """Submit and stream; leaving the loop early aborts the request and frees its KV."""
        stream = await self.submit(prompt, sampling, **kwargs)
        try:
            async for out in stream:
                yield out
        finally:
            await stream.aclose()

    async def complete(
        self, prompt: list[int] | str | None, sampling: SamplingParams | None = None, **kwargs: Any
    ) -> RequestOutput:
        """Run a request to its end; one output with all ids and text."""
        ids: list[int] = []
        text: list[str] = []
        logprobs: list[TokenLogprob] | None = None
        async for out in self.generate(prompt, sampling, **kwargs):
            ids += out.new_token_ids
            text.append(out.new_text)
            if out.logprobs is not None:
                logprobs = (logprobs or []) + out.logprobs
        return RequestOutput(
            out.rid,
            ids,
            "".join(text),
            out.finish_reason,
            out.prompt_tokens,
            out.completion_tokens,
            out.cached_tokens,
            logprobs,
        )

    async def fill(
        self, prompt: list[int] | str, *, context_id: str, **kwargs: Any
    ) -> RequestOutput:
        """Compute `prompt`'s KV into a context (created, or forked from `parent_context_id`)."""
        return await self.complete(prompt, context_id=context_id, prefill_only=True, **kwargs)

    async def free_context(self, context_id: str) -> None:
        await self.call(lambda: self.engine.free_context(context_id))

    async def abort(self, rid: str) -> bool:
        return await self.call(lambda: self.engine.abort(rid))

    def abort_soon(self, rid: str) -> None:
        """Queue an abort that nothing can call off: awaiting `abort` from a task being
        cancelled would cancel the queued command with it, and the request would run on."""
        if not self._stopping:
            self._commands.put((lambda: self.engine.abort(rid), concurrent.futures.Future()))
            self._wake.set()

    async def flush_cache(self) -> int:
        return await self.call(self.engine.flush_cache)

    async def stats(self) -> EngineStats:
        return await self.call(self.engine.stats)

    async def shutdown(self) -> None:
        """Abort what is in flight, then stop the worker thread."""
        if self._stopping:
            return
        reason = FinishReason(FinishKind.ABORT, message="engine shutting down")

        def abort_all() -> None:
            for rid in list(self.engine.requests):
                self.engine.abort(rid, reason.message or "")

        await self.call(abort_all)
        self._stopping = True
        self._wake.set()
        self.tokens.close()
        await asyncio.to_thread(self._thread.join)


class RequestStream:
    """Outputs of one submitted request, in order; the last one carries the finish reason."""

    def __init__(
        self, engine: AsyncEngine, rid: str, outputs: asyncio.Queue[RequestOutput]
    ) -> None:
        self.rid = rid
        self._engine = engine
        self._outputs = outputs
        self.finished = False

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self.finished:
            raise StopAsyncIteration
        out = await self._outputs.get()
        self.finished = out.finish_reason is not None
        return out

    async def aclose(self) -> None:
        """Abort the request if it is still running (the consumer went away)."""
        if not self.finished:
            self.finished = True
            self._engine.abort_soon(self.rid)
