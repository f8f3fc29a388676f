"""OpenAI-compatible completions over an `EngineClient`: wire models <-> engine calls.

Every request is validated and queued on the engine before anything is returned, so a bad
request is a plain 4xx even when it asked to stream; once streaming, a failure is sent as an
`{"error": ...}` event followed by `[DONE]` (what the `openai` client turns into an
`APIError`). A consumer that goes away (client disconnect, cancellation) aborts the engine
request, so its KV is freed at once. The engine request id is the response id.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

from parrot_integrations.protocol.errors import ErrorInfo, ErrorResponse
from parrot_integrations.protocol.openai import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatDelta,
    Completion,
    CompletionChoice,
    CompletionRequest,
    PromptTokensDetails,
    SamplingRequest,
    Usage,
)
from parrot_integrations.protocol.openai_tools import FunctionCallDelta, ToolCallDelta

from .core.engine_client import EngineClient, OutputStream, default_max_tokens
from .core.errors import ServerShuttingDownError
from .core.metered_stream import MeteredStream
from .core.metrics import Metrics
from .core.objective import priority_of
from .core.served_models import ServedModels
from .core.tenants import DEFAULT_TENANT, Tenant, cache_key
from .engine.errors import RequestAbortedError
from .engine.request import FinishKind, RequestOutput
from .engine.sampling_params import SamplingParams
from .error_status import status_of
from .tool_calls import ToolFormat, tool_format
from .tool_calls.format import CallPiece, Piece, TextPiece

if TYPE_CHECKING:
    from .core.session import SessionManager

log = logging.getLogger(__name__)


def to_sampling_params(
    req: SamplingRequest, max_new_tokens: int, grammar: str | None = None
) -> SamplingParams:
    """OpenAI's sampling fields as the engine's; invalid values raise `InvalidRequestError`.
    `grammar`: the EBNF grammar the output follows (tools offered), else `response_format`'s
    schema applies."""
    top_k = req.top_k if req.top_k is not None else -1
    top_p = 1.0 if req.top_p is None else req.top_p
    if top_p == 0:  # OpenAI accepts 0: only the most likely token survives the cut
        top_p, top_k = 1.0, 1
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=top_p,
        top_k=top_k,
        stop=tuple(req.stop_list),
        sampling_seed=req.seed,
        ignore_eos=req.ignore_eos,
        json_schema=None if grammar or not req.response_format else req.response_format.schema_text,
        ebnf=grammar,
    )


def _usage(out: RequestOutput | None) -> Usage:
    prompt, completion = (out.prompt_tokens, out.completion_tokens) if out else (0, 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=out.cached_tokens if out else 0),
    )


def _delta(piece: Piece) -> ChatDelta:
    if isinstance(piece, TextPiece):
        return ChatDelta(content=piece.text)
    call = piece.call  # whole: its id, name and arguments in one delta
    function = FunctionCallDelta(name=call.function.name, arguments=call.function.arguments)
    return ChatDelta(
        tool_calls=[
            ToolCallDelta(index=piece.index, id=call.id, type="function", function=function)
        ]
    )


def _sse(data: str) -> str:
    return f"data: {data}\n\n"


_DONE = _sse("[DONE]")

# Cleanup tasks that must outlive a cancelled caller (the loop keeps only weak references).
_background: set[asyncio.Task] = set()


class _Run:
    """One submitted request: iterate its outputs inside `async with`; leaving the block early
    (error, disconnect, cancellation) aborts it. Records the request's metrics once."""

    def __init__(
        self,
        stream: OutputStream,
        metrics: Metrics | None,
        objective: str,
        start: float,
        live: set[_Run],
    ) -> None:
        self.stream, self.metrics, self.objective, self.start = stream, metrics, objective, start
        self.live = live  # the service's runs in flight, this one until it ends
        live.add(self)
        self.stopped = False  # ended by the server's shutdown
        self.rid = stream.rid
        self.ttft: float | None = None
        self.last: RequestOutput | None = None
        self.finish_reason: str | None = None  # "stop" | "length" once finished
        self.called_tools = False  # the answer is tool calls: its finish reason says so

    def __aiter__(self) -> AsyncIterator[RequestOutput]:
        return self._outputs()

    async def _outputs(self) -> AsyncIterator[RequestOutput]:
        async for out in self.stream:
            if self.ttft is None and out.new_token_ids:
                self.ttft = time.monotonic() - self.start
            self.last = out
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

    async def __aenter__(self) -> _Run:
        return self

    async def stop(self) -> None:
        self.stopped = True
        await self.stream.aclose()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> None:
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


class OpenAIService:
    def __init__(
        self,
        engine: EngineClient,
        metrics: Metrics | None = None,
        sessions: SessionManager | None = None,
        models: ServedModels | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.sessions = sessions
        self.models = models or ServedModels(engine)
        self._live: set[_Run] = set()

    async def stop_all(self) -> None:
        """The server is stopping: every request in flight ends with `ServerShuttingDownError`
        (a JSON 503, or an error event before `[DONE]`)."""
        await asyncio.gather(*(run.stop() for run in list(self._live)))

    @functools.cached_property
    def tools(self) -> ToolFormat:
        """The model's tool format, chosen at the first chat request (a pool's engines may not
        be connected when the service is built)."""
        return tool_format(self.engine.chat_template)

    # -- submission ---------------------------------------------------------------------------
    async def _start(
        self,
        req: SamplingRequest,
        tenant: Tenant,
        prompt: str | list[int],
        rid: str,
        grammar: str | None,
    ) -> _Run:
        start = time.monotonic()
        objective = req.criteria.value if req.criteria else "none"
        try:
            if isinstance(prompt, str):  # once, here: both the limit and the engine need it
                prompt = await self.engine.encode(prompt)
            limit = req.max_new_tokens or await default_max_tokens(self.engine, prompt)
            sampling = to_sampling_params(req, limit, grammar)
            stream = await self.engine.submit(
                prompt,
                sampling,
                rid=rid,
                priority=priority_of(req.criteria),
                app=req.session_id,
                namespace=cache_key(tenant.cache_namespace, None),
            )
        except Exception:
            if self.metrics is not None:
                self.metrics.observe("openai", objective, "error", time.monotonic() - start, None)
            raise
        if self.metrics is not None:
            stream = MeteredStream(stream, self.metrics)
        return _Run(stream, self.metrics, objective, start, self._live)

    def _check(self, req: SamplingRequest, tenant: Tenant) -> str:
        """The model's served name; a named session must be live and the tenant's (and is
        kept alive)."""
        model = self.models.resolve(req.model)
        if req.session_id is not None and self.sessions is not None:
            self.sessions.get(req.session_id, tenant)  # NotFoundError (404): closed, expired
        return model

    def chat_prompt(
        self,
        req: ChatCompletionRequest,
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
    ) -> str:
        """The prompt `req` is served with: its turns and tools through the model's tool
        format, then the chat template."""
        chat = self.tools.prompt(req)
        return self.engine.render_chat(
            chat.messages,
            chat.tools,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
        )

    async def _start_chat(self, req: ChatCompletionRequest, tenant: Tenant) -> tuple[_Run, str]:
        model = self._check(req, tenant)
        prompt = self.chat_prompt(req)
        grammar = self.tools.output_grammar(req)
        run = await self._start(req, tenant, prompt, f"chatcmpl-{uuid.uuid4().hex}", grammar)
        return run, model

    async def _start_completion(self, req: CompletionRequest, tenant: Tenant) -> tuple[_Run, str]:
        model = self._check(req, tenant)
        return await self._start(req, tenant, req.prompt, f"cmpl-{uuid.uuid4().hex}", None), model

    # -- chat ---------------------------------------------------------------------------------
    async def chat(
        self, req: ChatCompletionRequest, tenant: Tenant = DEFAULT_TENANT
    ) -> ChatCompletion:
        run, model = await self._start_chat(req, tenant)
        parser = self.tools.parser(req)
        pieces: list[Piece] = []
        async with run:
            async for out in run:
                pieces += parser.feed(out.new_text)
        pieces += parser.finish()
        calls = [p.call for p in pieces if isinstance(p, CallPiece)]
        run.called_tools = bool(calls)
        text = "".join(p.text for p in pieces if isinstance(p, TextPiece))
        message = ChatCompletionMessage(
            content=text if text or not calls else None, tool_calls=calls or None
        )
        choice = ChatCompletionChoice(message=message, finish_reason=run.chat_finish_reason)
        return ChatCompletion(
            id=run.rid,
            created=int(time.time()),
            model=model,
            choices=[choice],
            usage=_usage(run.last),
        )

    async def chat_stream(
        self, req: ChatCompletionRequest, tenant: Tenant = DEFAULT_TENANT
    ) -> AsyncIterator[str]:
        """SSE events (`data: ...`); submitted before this returns, so errors are still 4xx."""
        run, model = await self._start_chat(req, tenant)
        created = int(time.time())

        def chunk(delta: ChatDelta, finish: str | None = None) -> str:
            choice = ChatCompletionChunkChoice(delta=delta, finish_reason=finish)
            body = ChatCompletionChunk(id=run.rid, created=created, model=model, choices=[choice])
            return body.model_dump_json()

        parser = self.tools.parser(req)

        def render(out: RequestOutput) -> Iterable[str]:
            pieces = parser.feed(out.new_text)
            if run.finish_reason is not None:
                pieces += parser.finish()
            for piece in pieces:
                yield chunk(_delta(piece))
                run.called_tools |= isinstance(piece, CallPiece)
            if run.finish_reason is not None:
                yield chunk(ChatDelta(), run.chat_finish_reason)
                if req.include_usage:
                    final = ChatCompletionChunk(
                        id=run.rid, created=created, model=model, choices=[], usage=_usage(out)
                    )
                    yield final.model_dump_json()

        first = chunk(ChatDelta(role="assistant", content=""))  # OpenAI's first delta: the role
        return self._events(run, render, first)

    # -- completions --------------------------------------------------------------------------
    async def completion(
        self, req: CompletionRequest, tenant: Tenant = DEFAULT_TENANT
    ) -> Completion:
        run, model = await self._start_completion(req, tenant)
        text: list[str] = []
        async with run:
            async for out in run:
                text.append(out.new_text)
        choice = CompletionChoice(text="".join(text), finish_reason=run.finish_reason)
        return Completion(
            id=run.rid,
            created=int(time.time()),
            model=model,
            choices=[choice],
            usage=_usage(run.last),
        )

    async def completion_stream(
        self, req: CompletionRequest, tenant: Tenant = DEFAULT_TENANT
    ) -> AsyncIterator[str]:
        run, model = await self._start_completion(req, tenant)
        created = int(time.time())

        def render(out: RequestOutput) -> Iterable[str]:
            if out.new_text or run.finish_reason is not None:
                choice = CompletionChoice(text=out.new_text, finish_reason=run.finish_reason)
                body = Completion(id=run.rid, created=created, model=model, choices=[choice])
                yield body.model_dump_json()
            if run.finish_reason is not None and req.include_usage:
                final = Completion(
                    id=run.rid, created=created, model=model, choices=[], usage=_usage(out)
                )
                yield final.model_dump_json()

        return self._events(run, render, None)

    # -- streaming ----------------------------------------------------------------------------
    @staticmethod
    async def _events(
        run: _Run, render: Callable[[RequestOutput], Iterable[str]], first: str | None
    ) -> AsyncIterator[str]:
        try:
            async with run:
                if first is not None:
                    yield _sse(first)
                async for out in run:
                    for data in render(out):
                        yield _sse(data)
        except Exception as exc:  # headers are sent: the error goes in the stream
            status, kind = status_of(exc)
            if status >= 500:
                log.error("openai stream %s failed: %s: %s", run.rid, type(exc).__name__, exc)
            err = ErrorResponse(error=ErrorInfo(message=str(exc), type=kind, code=status))
            yield _sse(err.model_dump_json())
        yield _DONE
