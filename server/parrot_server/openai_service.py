"""OpenAI-compatible completions over an `EngineClient`: wire models <-> engine calls.

Every request is validated and queued on the engine before anything is returned, so a bad
request is a plain 4xx even when it asked to stream; once streaming, a failure is sent as an
`{"error": ...}` event followed by `[DONE]` (what the `openai` client turns into an
`APIError`). A consumer that goes away (client disconnect, cancellation) aborts the engine
requests (`ChoiceRun`), so their KV is freed at once. The engine request id is the response
id; with `n` > 1 each choice is its own engine request (`<id>-<index>`), all submitted at once
so the engine computes the shared prompt once and the other choices read it from its cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

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
    SamplingRequest,
)
from parrot_integrations.protocol.openai_logprobs import ChoiceLogprobs, CompletionLogprobs
from parrot_integrations.protocol.openai_tools import FunctionCallDelta, ToolCallDelta

from .closing_stream import ClosingStream
from .core.engine_client import EngineClient, Submission, default_max_tokens
from .core.metered_stream import MeteredStream
from .core.metrics import Metrics
from .core.objective import priority_of
from .core.served_models import ServedModels
from .core.tenants import DEFAULT_TENANT, Tenant, cache_key
from .engine.request import RequestOutput
from .error_status import status_of
from .openai_logprobs import TokenTexts, chat_logprobs, completion_logprobs
from .openai_run import ChoiceRun, end_runs, merged, response_id, usage_of
from .openai_sampling import to_sampling_params
from .tool_calls import ToolFormat, tool_format
from .tool_calls.format import CallPiece, Piece, TextPiece

if TYPE_CHECKING:
    from .core.session import SessionManager

log = logging.getLogger(__name__)


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

# What a stream renders: one output of one choice -> the events' JSON.
Render = Callable[[ChoiceRun, RequestOutput], Awaitable[Iterable[str]]]


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
        self._live: set[ChoiceRun] = set()

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
    ) -> list[ChoiceRun]:
        """Submits the `n` choices together (one engine step admits them, the first computes
        the prompt and the others wait for its KV); an error fails them all."""
        start = time.monotonic()
        objective = req.criteria.value if req.criteria else "none"
        n = req.choices
        streams: list = []  # OutputStream | Exception, once submitted
        try:
            if isinstance(prompt, str):  # once, here: both the limit and the engine need it
                prompt = await self.engine.encode(prompt)
            limit = req.max_new_tokens or default_max_tokens(self.engine.info, prompt)
            subs = [
                Submission(
                    prompt,
                    to_sampling_params(req, limit, grammar, i),
                    rid if n == 1 else f"{rid}-{i}",
                    priority_of(req.criteria),
                    task_group=None if n == 1 else rid,  # a pool keeps them on one engine
                    app=req.session_id,
                    namespace=cache_key(tenant.cache_namespace, None),
                )
                for i in range(n)
            ]
            streams = await self.engine.submit_many(subs)
            failed = next((s for s in streams if isinstance(s, BaseException)), None)
            if failed is not None:
                raise failed
        except Exception:
            for s in streams:
                if not isinstance(s, BaseException):
                    await s.aclose()
            if self.metrics is not None:
                self.metrics.observe("openai", objective, "error", time.monotonic() - start, None)
            raise
        if self.metrics is not None:
            streams = [MeteredStream(s, self.metrics) for s in streams]
        return [
            ChoiceRun(i, s, self.metrics, objective, start, self._live)
            for i, s in enumerate(streams)
        ]

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
            template_kwargs=req.chat_template_kwargs,
        )

    async def _start_chat(
        self, req: ChatCompletionRequest, tenant: Tenant
    ) -> tuple[list[ChoiceRun], str]:
        model = self._check(req, tenant)
        prompt = self.chat_prompt(req)
        grammar = self.tools.output_grammar(req)
        runs = await self._start(req, tenant, prompt, f"chatcmpl-{uuid.uuid4().hex}", grammar)
        return runs, model

    async def _start_completion(
        self, req: CompletionRequest, tenant: Tenant
    ) -> tuple[list[ChoiceRun], str]:
        model = self._check(req, tenant)
        runs = await self._start(req, tenant, req.prompt, f"cmpl-{uuid.uuid4().hex}", None)
        return runs, model

    async def _echo(self, req: CompletionRequest) -> str:
        """The text `echo` puts before each choice: the prompt's."""
        if not req.echo:
            return ""
        return req.prompt if isinstance(req.prompt, str) else await self.engine.decode(req.prompt)

    # -- chat ---------------------------------------------------------------------------------
    async def chat(
        self, req: ChatCompletionRequest, tenant: Tenant = DEFAULT_TENANT
    ) -> ChatCompletion:
        runs, model = await self._start_chat(req, tenant)
        texts = TokenTexts(self.engine)
        choices = []
        async with contextlib.AsyncExitStack() as stack:
            for run in runs:
                await stack.enter_async_context(run)
            for run in runs:  # the engine runs them all at once; read one after the other
                parser = self.tools.parser(req)
                pieces: list[Piece] = []
                async for out in run:
                    pieces += parser.feed(out.new_text)
                pieces += parser.finish()
                calls = [p.call for p in pieces if isinstance(p, CallPiece)]
                run.called_tools = bool(calls)
                text = "".join(p.text for p in pieces if isinstance(p, TextPiece))
                message = ChatCompletionMessage(
                    content=text if text or not calls else None, tool_calls=calls or None
                )
                logprobs = await chat_logprobs(run.logprobs, texts) if req.logprobs else None
                choices.append(
                    ChatCompletionChoice(
                        index=run.index,
                        message=message,
                        logprobs=logprobs,
                        finish_reason=run.chat_finish_reason,
                    )
                )
        return ChatCompletion(
            id=response_id(runs),
            created=int(time.time()),
            model=model,
            choices=choices,
            usage=usage_of(runs),
        )

    async def chat_stream(
        self, req: ChatCompletionRequest, tenant: Tenant = DEFAULT_TENANT
    ) -> AsyncIterator[str]:
        """SSE events (`data: ...`); submitted before this returns, so errors are still 4xx."""
        runs, model = await self._start_chat(req, tenant)
        rid = response_id(runs)
        created = int(time.time())
        texts = TokenTexts(self.engine)
        parsers = {run: self.tools.parser(req) for run in runs}

        def chunk(
            run: ChoiceRun,
            delta: ChatDelta,
            finish: str | None = None,
            lp: ChoiceLogprobs | None = None,
        ) -> str:
            choice = ChatCompletionChunkChoice(
                index=run.index, delta=delta, logprobs=lp, finish_reason=finish
            )
            return ChatCompletionChunk(
                id=rid, created=created, model=model, choices=[choice]
            ).model_dump_json()

        async def render(run: ChoiceRun, out: RequestOutput) -> Iterable[str]:
            parser = parsers[run]
            pieces = parser.feed(out.new_text)
            if run.finish_reason is not None:
                pieces += parser.finish()
            # This output's tokens' log-probabilities ride on its first chunk.
            lp = await chat_logprobs(out.logprobs, texts) if out.logprobs else None
            events = []
            for piece in pieces:
                events.append(chunk(run, _delta(piece), lp=lp))
                lp = None
                run.called_tools |= isinstance(piece, CallPiece)
            if lp is not None:
                events.append(chunk(run, ChatDelta(content=""), lp=lp))
            if run.finish_reason is not None:
                events.append(chunk(run, ChatDelta(), run.chat_finish_reason))
            return events

        def usage() -> str | None:
            if not req.include_usage:
                return None
            final = ChatCompletionChunk(
                id=rid, created=created, model=model, choices=[], usage=usage_of(runs)
            )
            return final.model_dump_json()

        # OpenAI's first delta of each choice: the role.
        first = [chunk(run, ChatDelta(role="assistant", content="")) for run in runs]
        return ClosingStream(self._events(runs, render, first, usage), lambda: end_runs(runs))

    # -- completions --------------------------------------------------------------------------
    async def completion(
        self, req: CompletionRequest, tenant: Tenant = DEFAULT_TENANT
    ) -> Completion:
        runs, model = await self._start_completion(req, tenant)
        echo = await self._echo(req)
        texts = TokenTexts(self.engine)
        choices = []
        async with contextlib.AsyncExitStack() as stack:
            for run in runs:
                await stack.enter_async_context(run)
            for run in runs:
                text = [echo]
                async for out in run:
                    text.append(out.new_text)
                logprobs = None
                if req.logprobs is not None:
                    logprobs = await completion_logprobs(run.logprobs, texts, len(echo))
                choices.append(
                    CompletionChoice(
                        index=run.index,
                        text="".join(text),
                        logprobs=logprobs,
                        finish_reason=run.finish_reason,
                    )
                )
        return Completion(
            id=response_id(runs),
            created=int(time.time()),
            model=model,
            choices=choices,
            usage=usage_of(runs),
        )

    async def completion_stream(
        self, req: CompletionRequest, tenant: Tenant = DEFAULT_TENANT
    ) -> AsyncIterator[str]:
        runs, model = await self._start_completion(req, tenant)
        rid = response_id(runs)
        created = int(time.time())
        echo = await self._echo(req)
        texts = TokenTexts(self.engine)
        offsets = {run: len(echo) for run in runs}

        def chunk(run: ChoiceRun, text: str, lp: CompletionLogprobs | None = None) -> str:
            choice = CompletionChoice(
                index=run.index, text=text, logprobs=lp, finish_reason=run.finish_reason
            )
            return Completion(
                id=rid, created=created, model=model, choices=[choice]
            ).model_dump_json()

        async def render(run: ChoiceRun, out: RequestOutput) -> Iterable[str]:
            lp = None
            if req.logprobs is not None and out.logprobs:
                lp = await completion_logprobs(out.logprobs, texts, offsets[run])
            offsets[run] += len(out.new_text)
            if out.new_text or lp is not None or run.finish_reason is not None:
                return [chunk(run, out.new_text, lp)]
            return []

        def usage() -> str | None:
            if not req.include_usage:
                return None
            final = Completion(
                id=rid, created=created, model=model, choices=[], usage=usage_of(runs)
            )
            return final.model_dump_json()

        first = [chunk(run, echo) for run in runs] if echo else []
        return ClosingStream(self._events(runs, render, first, usage), lambda: end_runs(runs))

    # -- streaming ----------------------------------------------------------------------------
    @staticmethod
    async def _events(
        runs: list[ChoiceRun],
        render: Render,
        first: list[str],
        usage: Callable[[], str | None],
    ) -> AsyncIterator[str]:
        try:
            async with contextlib.AsyncExitStack() as stack:
                for run in runs:
                    await stack.enter_async_context(run)
                for data in first:
                    yield _sse(data)
                async for run, out in merged(runs):
                    for data in await render(run, out):
                        yield _sse(data)
                final = usage()
                if final is not None:
                    yield _sse(final)
        except Exception as exc:  # headers are sent: the error goes in the stream
            status, kind = status_of(exc)
            if status >= 500:
                log.error("openai stream %s failed: %s: %s", runs[0].rid, type(exc).__name__, exc)
            err = ErrorResponse(error=ErrorInfo(message=str(exc), type=kind, code=status))
            yield _sse(err.model_dump_json())
        yield _DONE
