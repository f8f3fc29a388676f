"""Runs calls on the engine the moment their inputs exist, server-side, with no client round
trip; a failed or cancelled producer fails its consumers with the cause.

Ready calls wait in one priority queue (objective priority, then arrival) and at most
`max_inflight` run at once, so a burst of programs never overflows the engine's own queue.
Calls that become ready together (the maps of one reduce, a whole task group) are started in
the same event-loop turn, so the engine admits them into the same steps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from parrot_integrations.protocol.native import (
    CallStatus,
    OutputUsage,
    SamplingOptions,
    VariableStatus,
)

from ..engine.errors import EngineError, EngineOverloadedError
from ..engine.request import FinishKind, RequestOutput
from ..engine.sampling_params import SamplingParams, choices_ebnf
from .call_prompt import render_prompt
from .engine_client import EngineClient, OutputStream, Submission, default_max_tokens
from .graph import Call, Graph
from .metered_stream import MeteredStream
from .metrics import Metrics
from .objective import priority_of
from .penalty_fields import penalty_fields
from .ready_queue import ReadyQueue
from .tenants import Tenant, cache_key
from .turn_batcher import TurnBatcher
from .variable import Variable

log = logging.getLogger(__name__)

OVERLOAD_RETRY_SECONDS = 60.0  # how long a ready call retries an engine whose queue is full


class SessionLike(Protocol):
    id: str
    graph: Graph
    tenant: Tenant


class CallFailed(Exception):
    """A call ends without its outputs; the message becomes their error."""


def to_sampling_params(opts: SamplingOptions, unset_max_tokens: int = 1) -> SamplingParams:
    """Wire sampling options -> engine parameters (raises InvalidRequestError when invalid).
    `unset_max_tokens` is the limit of an output with `max_tokens=None`, which depends on its
    prompt (`default_max_tokens`)."""
    return SamplingParams(
        max_new_tokens=opts.max_tokens if opts.max_tokens is not None else unset_max_tokens,
        temperature=opts.temperature,
        top_p=opts.top_p,
        top_k=opts.top_k,
        stop=tuple(opts.stop),
        sampling_seed=opts.seed,
        ignore_eos=opts.ignore_eos,
        json_schema=opts.json_schema,  # a dict becomes its JSON text
        regex=opts.regex,
        ebnf=choices_ebnf(opts.choices) if opts.choices else None,
        **penalty_fields(opts),
    )


def _depth(graph: Graph, call: Call) -> int:
    """The longest chain of producers above `call` (0 for a call fed only by client values):
    deeper calls are further along their app, so running them first finishes apps sooner.
    Memoised in `call.depth`; iterative, as chains may be thousands of calls long."""
    todo = [call]
    while todo:
        c = todo[-1]
        if c.depth is not None:
            todo.pop()
            continue
        producers = graph.producers_of(c)
        missing = [p for p in producers if p.depth is None]
        if missing:
            todo.extend(missing)
            continue
        c.depth = 1 + max((p.depth for p in producers if p.depth is not None), default=-1)
        todo.pop()
    return call.depth


class Executor:
    def __init__(self, engine: EngineClient, metrics: Metrics, max_inflight: int) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_inflight = max_inflight
        # Ready calls: by priority, then app fairness, then deepest-first (ready_queue.py).
        self._ready: ReadyQueue[Call] = ReadyQueue()
        self._queued: dict[Call, SessionLike] = {}
        self._tasks: dict[Call, asyncio.Task] = {}
        self._pump_scheduled = False
        # Calls started in one turn are tokenized in one pass and submitted in one command.
        self._encode: TurnBatcher[str, list[int]] = TurnBatcher(engine.encode_many)
        self._submit_one: TurnBatcher[Submission, OutputStream] = TurnBatcher(
            engine.submit_many, self._close_unread
        )
        self._closing: set[asyncio.Task] = set()

    # -- events ---------------------------------------------------------------------------------
    def submitted(self, session: SessionLike, calls: list[Call]) -> None:
        """New calls: start those whose inputs exist; the rest start when they do."""
        now = time.monotonic()
        for call in calls:
            call.submitted_at = now
            self._check_inputs(session, call)

    def variable_settled(self, session: SessionLike, var: Variable) -> None:
        """`var` got a value or failed: its consumers may start, or fail."""
        graph = session.graph
        for cid in var.consumers:
            call = graph.calls.get(cid)
            if call is not None and call.status is CallStatus.WAITING:
                self._check_inputs(session, call)

    def reprioritize(self, session: SessionLike, calls: list[Call]) -> None:
        """Objectives changed (a later get): queued calls move to their new place."""
        for call in calls:
            if call in self._ready:
                self._push(session, call)  # moves it

    def cancel(self, session: SessionLike, call: Call, reason: str = "cancelled") -> None:
        task = self._tasks.get(call)
        if task is not None:
            call.cancel_reason = reason
            task.cancel(reason)  # _run fails the outputs and frees the engine request
        elif not call.finished:
            self._finish(session, call, CallStatus.CANCELLED, reason)

    async def cancel_and_wait(
        self, session: SessionLike, call: Call, reason: str, timeout: float = 10.0
    ) -> None:
        """Cancel, and return once the call has wound down (its engine request aborted)."""
        task = self._tasks.get(call)
        self.cancel(session, call, reason)
        if task is not None:
            await asyncio.wait({task}, timeout=timeout)

    # -- internals ------------------------------------------------------------------------------
    def _check_inputs(self, session: SessionLike, call: Call) -> None:
        inputs = session.graph.input_vars(call)
        failed = next((v for v in inputs if v.status is VariableStatus.FAILED), None)
        if failed is not None:
            self._finish(
                session, call, CallStatus.FAILED, f"input {failed.id!r} failed: {failed.error}"
            )
        elif all(v.status is VariableStatus.READY for v in inputs) and not call.queued:
            self._push(session, call)

    def _push(self, session: SessionLike, call: Call) -> None:
        prio = priority_of(call.objective)
        call.queued = True
        self._queued[call] = session
        self._ready.push(call, priority=prio, app=session.id, depth=_depth(session.graph, call))
        if not self._pump_scheduled:  # coalesce: everything ready in this turn starts together
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        while self._ready and len(self._tasks) < self.max_inflight:
            call = self._ready.pop()
            session = self._queued.pop(call)
            call.queued = False
            call.status = CallStatus.RUNNING
            task = asyncio.get_running_loop().create_task(self._run(session, call))
            self._tasks[call] = task
            task.add_done_callback(lambda t, s=session, c=call: self._task_done(s, c, t))

    def _task_done(self, session: SessionLike, call: Call, task: asyncio.Task) -> None:
        """Frees the in-flight slot. A task cancelled before its first step never ran `_run`'s
        handlers, so the call is finished here too."""
        self._tasks.pop(call, None)
        if not call.finished:
            self._finish(session, call, CallStatus.CANCELLED, call.cancel_reason)
        self._pump()

    async def _run(self, session: SessionLike, call: Call) -> None:
        graph = session.graph
        ttft: float | None = None
        try:
            for k, binding in enumerate(call.outputs.values()):
                var = graph.variables[binding.var]
                # Measured at submit (the first output of a call whose inputs were known), else
                # rendered and tokenized now: either way once, and the engine gets the ids.
                prompt, call.prompt_ids = (call.prompt_ids if k == 0 else None), None
                if prompt is None:
                    prompt = await self._encode(
                        render_prompt(self.engine, lambda v: graph.variables[v].value, call, k)
                    )
                unset = 1
                if binding.sampling.max_tokens is None:  # to the end of the context window
                    unset = default_max_tokens(self.engine.info, prompt)
                sampling = to_sampling_params(binding.sampling, unset)
                rid = f"{session.id}.{call.id}.{k}"
                sub = Submission(
                    prompt,
                    sampling,
                    rid,
                    priority_of(call.objective),
                    call.task_group,
                    session.id,
                    cache_key(session.tenant.cache_namespace, None),
                )
                value, first, last = await self._generate(sub, var.append)
                if ttft is None and first is not None:
                    ttft = first - call.submitted_at
                var.set(value, self._usage(last))
                self.variable_settled(session, var)
            self._finish(session, call, CallStatus.DONE, None, ttft)
        except asyncio.CancelledError as exc:
            reason = str(exc.args[0]) if exc.args else "cancelled"
            self._finish(session, call, CallStatus.CANCELLED, reason)
        except (CallFailed, EngineError) as exc:
            self._finish(session, call, CallStatus.FAILED, str(exc))
        except Exception as exc:  # a bug: fail the call loudly rather than hang its readers
            log.exception("call %s failed unexpectedly", call.id)
            self._finish(session, call, CallStatus.FAILED, f"internal error: {exc!r}")

    async def _generate(
        self, sub: Submission, on_delta: Callable[[str], None]
    ) -> tuple[str, float | None, RequestOutput]:
        """The generated text, when its first text came, and the final output (finish reason
        and token counts)."""
        stream = MeteredStream(await self._submit(sub), self.metrics)
        parts: list[str] = []
        first: float | None = None
        last: RequestOutput | None = None
        try:
            async for out in stream:
                last = out
                if out.new_text:
                    first = first or time.monotonic()
                    parts.append(out.new_text)
                    on_delta(out.new_text)
                reason = out.finish_reason
                if reason is not None and reason.kind is FinishKind.ABORT:
                    raise CallFailed(f"generation aborted: {reason.message}")
        finally:
            await stream.aclose()  # aborts the engine request if we leave early (cancel)
        if last is None or last.finish_reason is None:
            raise CallFailed("the engine's stream ended without a finish reason")
        return "".join(parts), first, last

    def _usage(self, last: RequestOutput) -> OutputUsage:
        """The counts of the final output, with the finish reason named as /v1 names it."""
        return OutputUsage(
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            cached_tokens=last.cached_tokens,
            finish_reason="stop" if last.finish_reason.kind is FinishKind.STOP else "length",
            model=self.engine.info.model,
        )

    async def _submit(self, sub: Submission):
        deadline = time.monotonic() + OVERLOAD_RETRY_SECONDS
        delay = 0.05
        while True:
            try:
                return await self._submit_one(sub)
            except EngineOverloadedError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)

    def _close_unread(self, stream: OutputStream) -> None:
        """A stream whose call was cancelled while it was being submitted: abort it."""
        task = asyncio.get_running_loop().create_task(stream.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _finish(
        self,
        session: SessionLike,
        call: Call,
        status: CallStatus,
        error: str | None,
        ttft: float | None = None,
    ) -> None:
        if call.finished:
            return
        call.status, call.error = status, error
        call.queued = False
        if self._ready.remove(call):
            self._queued.pop(call, None)
        outcome = {CallStatus.DONE: "ok", CallStatus.CANCELLED: "cancelled"}.get(status, "error")
        objective = call.objective.value if call.objective else "none"
        self.metrics.observe(
            "native", objective, outcome, time.monotonic() - call.submitted_at, ttft
        )
        log.info(
            "call %s %s%s",
            call.id,
            status.value,
            f": {error}" if error else "",
            extra={
                "session": session.id,
                "call": call.id,
                "status": status.value,
                "objective": objective,
                "task_group": call.task_group,
                "latency_s": round(time.monotonic() - call.submitted_at, 4),
            },
        )
        if status is CallStatus.DONE:
            return
        for var in session.graph.output_vars(call):
            if var.pending:
                var.fail(f"call {call.id!r} {status.value}: {error}")
                self.variable_settled(session, var)

    # -- introspection --------------------------------------------------------------------------
    @property
    def running(self) -> int:
        return len(self._tasks)

    async def shutdown(self) -> None:
        """Cancel what runs (engine requests are aborted) and wait for it to wind down."""
        for task in list(self._tasks.values()):
            task.cancel("server shutting down")
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
