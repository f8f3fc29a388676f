"""`ship(chain)`: a LangChain chain run as Parrot native programs.

    from parrot_integrations.langchain import ship
    fast = ship(prompt | llm | StrOutputParser() | prompt2 | llm | StrOutputParser())
    fast.invoke({"text": ...})        # one program: both calls run on the server

The returned runnable has the chain's input and output. Each run compiles the chain (see
`_compile.py`) into one native program per stretch without barriers, in one session (reused
across runs, see `_sessions.py`): the
values between steps are Semantic Variables, so dependent model calls start on the server the
moment their inputs exist, with no client round trip. A barrier (a function, a branch, another
parser, a retriever...) cuts the chain: what was collected is submitted, the values the
barrier needs are read, it runs here, and the rest ships again in a new program of the same
session. Logger `parrot_integrations.langchain.ship` says, at debug level, what shipped and
where it cut.

Callbacks: the shipped runnable is one chain run. When a callback handler listens (tracing
included), each shipped model call is replayed through the model's own `invoke` under that run,
with the real prompt, its answer taken from the server (see `_hook.py`), so handlers see the
usual model start/end events, in dependency order. Steps that run locally (barriers, steps on
real values) fire their own callbacks as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import patch_config
from pydantic import BaseModel

from ..protocol.native import Criteria
from ..semantic import SemanticVariable
from . import _native
from ._compile import Node, plan
from ._errors import mapped_errors
from ._hook import installed
from ._symbolic import (
    Compilation,
    Local,
    Message,
    Open,
    Resolve,
    ShippedCall,
    Steps,
    Text,
    concrete,
    map_leaves,
)

log = logging.getLogger("parrot_integrations.langchain.ship")


def ship(chain: Runnable, *, criteria: Criteria | str = Criteria.LATENCY) -> ShippedRunnable:
    """`chain` as a runnable whose stretches between barriers run as native programs.
    `criteria` is how its result is read (latency: the calls it depends on get priority)."""
    return ShippedRunnable(chain, Criteria(criteria))


class ShippedRunnable(Runnable[Any, Any]):
    def __init__(self, chain: Runnable, criteria: Criteria = Criteria.LATENCY) -> None:
        self.chain = chain
        self.criteria = criteria
        self.plan: Node = plan(chain)
        self.name = chain.get_name()
        cuts = [f"{b.runnable.get_name()} ({b.reason})" for b in self.plan.cuts()]
        log.debug(
            "ship %s: %s; %s",
            self.name,
            self.plan.describe(),
            f"cut at {', '.join(cuts)}" if cuts else "no cut: one program per run",
        )

    # Same input and output as the chain.
    @property
    def InputType(self) -> Any:  # noqa: N802 - LangChain's name
        return self.chain.InputType

    @property
    def OutputType(self) -> Any:  # noqa: N802
        return self.chain.OutputType

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return self.chain.get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return self.chain.get_output_schema(config)

    def __repr__(self) -> str:
        return f"ship({self.chain!r})"

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._invoke, input, config)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._acall_with_config(self._ainvoke, input, config)

    def _invoke(
        self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        with contextlib.ExitStack() as leases:
            run = _Run(self, run_manager, config, leases)
            steps = run.main(input)
            try:
                request = next(steps)
                while True:
                    request = steps.send(run.handle(request))
            except StopIteration as done:
                return done.value
            finally:
                steps.close()

    async def _ainvoke(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        async with contextlib.AsyncExitStack() as leases:
            run = _Run(self, run_manager, config, leases)
            steps = run.main(input)
            try:
                request = next(steps)
                while True:
                    request = steps.send(await run.ahandle(request))
            except StopIteration as done:
                return done.value
            finally:
                steps.close()


class _Run:
    """One run of a shipped chain: its session (the shared one of the first shipped call's
    model, see `_sessions.py`), the program being collected, and the calls whose callbacks
    are still to be replayed."""

    def __init__(
        self, shipped: ShippedRunnable, run_manager: Any, config: RunnableConfig, leases: Any
    ) -> None:
        self.shipped = shipped
        self.leases = leases
        self.criteria = shipped.criteria
        child = run_manager.get_child()
        self.config = patch_config(config, callbacks=child)
        self.listening = bool(child.handlers)  # else model callbacks have no audience
        self.ctx = Compilation()
        self.lease: Any = None
        self.server: tuple[str, str | None] | None = None
        self.program: Any = None
        self.programs = 0
        self.replayed = 0

    def main(self, value: Any) -> Steps:
        out = yield from self.shipped.plan.run(value, self.ctx)
        return (yield from concrete(out, self.ctx, always=True))

    # -- shared by both drivers ------------------------------------------------------------------
    @staticmethod
    def _server(model: Any) -> tuple[str, str | None]:
        return model.base_url, model.api_key.get_secret_value() if model.api_key else None

    def _program(self, model: Any) -> Any:
        """The program to add `model`'s call to; None when the model talks to another
        server than the session's (the first shipped call's)."""
        if self._server(model) != self.server:
            return None
        if self.program is None or self.program.submitted:
            self.program = self.lease.session.program()
        return self.program

    def _pending(self) -> bool:
        return self.program is not None and not self.program.submitted

    def _submitted(self) -> None:
        self.programs += 1
        calls = len(self.program.calls)
        self.lease.added += len(self.program.variables) + calls
        log.debug("%s: program %d submitted (%d calls)", self.shipped.name, self.programs, calls)

    def _answer(self, leaf: Any, var: SemanticVariable, text: str) -> Any:
        if isinstance(leaf, Message):
            if leaf.call.answer is None:
                leaf.call.answer = _native.chat_message(text, var.usage)
            return leaf.call.answer
        return text

    def _replay_input(self, call: ShippedCall, value: Any) -> list[BaseMessage] | str:
        def fill(text: str) -> str:
            return self.ctx.stand_ins.fill(text, value)

        if isinstance(call.input, str):
            return fill(call.input)
        out = []
        for m in call.input:
            content = m.content
            if isinstance(content, str):
                content = fill(content)
            else:  # text blocks
                content = [
                    fill(p)
                    if isinstance(p, str)
                    else {**p, "text": fill(p.get("text", ""))}
                    if isinstance(p, dict) and "text" in p
                    else p
                    for p in content
                ]
            out.append(m.model_copy(update={"content": content}))
        return out

    # -- sync -----------------------------------------------------------------------------------
    def handle(self, request: Open | Resolve | Local) -> Any:
        if isinstance(request, Open):
            if self.lease is None:
                model = request.model
                self.server = self._server(model)
                self.lease = self.leases.enter_context(model._sessions.lease(model.client))
            return self._program(request.model)
        if self._pending() and (isinstance(request, Resolve) or request.slow):
            self.program.__exit__(None, None, None)  # the server works while we go on
            self._submitted()
        if isinstance(request, Local):
            return request.runnable.invoke(request.input, self.config)
        if self.listening:
            for call in self.ctx.calls[self.replayed :]:
                self.replayed += 1
                real = self._replay_input(call, lambda v: v.get(criteria=self.criteria))
                with installed(_Replay(call, self.criteria)):
                    call.answer = call.node.runnable.invoke(real, self.config)

        def read(leaf: Any) -> Any:
            if isinstance(leaf, (Text, Message)):
                var = leaf.var if isinstance(leaf, Text) else leaf.call.output
                with mapped_errors():
                    return self._answer(leaf, var, var.get(criteria=self.criteria))
            return leaf

        return map_leaves(request.value, read)

    # -- async ----------------------------------------------------------------------------------
    async def ahandle(self, request: Open | Resolve | Local) -> Any:
        if isinstance(request, Open):
            if self.lease is None:
                model = request.model
                self.server = self._server(model)
                lease = model._sessions.alease(model.async_client)
                self.lease = await self.leases.enter_async_context(lease)
            return self._program(request.model)
        if self._pending() and (isinstance(request, Resolve) or request.slow):
            await self.program.__aexit__(None, None, None)
            self._submitted()
        if isinstance(request, Local):
            return await request.runnable.ainvoke(request.input, self.config)
        if self.listening:
            replays: dict[str, asyncio.Task[None]] = {}  # output variable id -> its replay
            for call in self.ctx.calls[self.replayed :]:
                replays[call.output.id] = asyncio.ensure_future(self._areplay(call, replays))
            self.replayed = len(self.ctx.calls)
            await asyncio.gather(*replays.values())
        found: list[Any] = []
        map_leaves(
            request.value, lambda x: found.append(x) if isinstance(x, (Text, Message)) else x
        )

        async def read(leaf: Any) -> Any:
            var = leaf.var if isinstance(leaf, Text) else leaf.call.output
            with mapped_errors():
                return self._answer(leaf, var, await var.aget(criteria=self.criteria))

        values = dict(zip(map(id, found), await asyncio.gather(*map(read, found)), strict=True))
        return map_leaves(request.value, lambda x: values.get(id(x), x))

    async def _areplay(self, call: ShippedCall, replays: dict[str, asyncio.Task[None]]) -> None:
        """Callbacks of one call once the calls it depends on have ended theirs (so events
        come in dependency order); independent calls replay concurrently."""
        await asyncio.gather(*(replays[v.id] for v in call.uses if v.id in replays))
        texts = await asyncio.gather(*(v.aget(criteria=self.criteria) for v in call.uses))
        values = {v.id: t for v, t in zip(call.uses, texts, strict=True)}
        real = self._replay_input(call, lambda v: values[v.id])
        with installed(_Replay(call, self.criteria)):
            call.answer = await call.node.runnable.ainvoke(real, self.config)


class _Replay:
    """The hook that answers a replayed model call with its shipped answer."""

    def __init__(self, call: ShippedCall, criteria: Criteria) -> None:
        self.call, self.criteria, self.model = call, criteria, call.node.model

    def _var(self) -> SemanticVariable:
        return self.call.output

    def chat(self, model: Any, messages: Any, stop: Any, kwargs: dict) -> ChatResult:
        var = self._var()
        with mapped_errors():
            return _native.chat_result(var.get(criteria=self.criteria), var.usage)

    async def achat(self, model: Any, messages: Any, stop: Any, kwargs: dict) -> ChatResult:
        var = self._var()
        with mapped_errors():
            return _native.chat_result(await var.aget(criteria=self.criteria), var.usage)

    def complete(self, model: Any, prompts: Any, stop: Any, kwargs: dict) -> LLMResult:
        var = self._var()
        with mapped_errors():
            return _native.llm_result([(var.get(criteria=self.criteria), var.usage)])

    async def acomplete(self, model: Any, prompts: Any, stop: Any, kwargs: dict) -> LLMResult:
        var = self._var()
        with mapped_errors():
            return _native.llm_result([(await var.aget(criteria=self.criteria), var.usage)])
