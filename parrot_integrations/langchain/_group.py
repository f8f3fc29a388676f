"""A batch of model calls as one native program whose calls form one task group.

`ChatParrot.abatch` still runs LangChain's `ainvoke` for each input (per-input configs,
callbacks, cache, errors), but each input's generation joins a `ChatBatch` (through the hook
in `_hook.py`) instead of sending its own `/v1` request. Once every input has either joined or
finished without joining (a cache hit, an error, a call a native call cannot express, which
goes through `/v1` as before), the joined calls are submitted as one program with one declared
`task_group`: the server dispatches them together. Each input then reads its own answer.

The server accepts or rejects a program as a unit; when it rejects the batch (a prompt over
the context window, say), the calls are resubmitted one by one so that, as with LangChain's
batch, only the offending input fails.

`ParrotLLM` gets all prompts of a batch in one `_generate` call already: `complete` /
`acomplete` submit them the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult, LLMResult
from langchain_core.runnables import RunnableConfig

from ..errors import InvalidRequestError, ParrotError
from ..variable import SemanticVariable, new_id
from . import _native
from ._errors import mapped_errors
from ._hook import installed

log = logging.getLogger(__name__)


class ChatBatch:
    """The inputs of one `abatch` of one chat model."""

    def __init__(self, model: Any, size: int) -> None:
        self.model = model
        self.size = size
        self.settled: set[int] = set()  # inputs that joined, or will not
        self.calls: dict[int, _native.NativeCall] = {}
        self.outputs: dict[int, asyncio.Future[SemanticVariable]] = {}
        self._leases = contextlib.AsyncExitStack()
        self._lease: Any = None
        self._flush: asyncio.Task[None] | None = None

    async def join(
        self, index: int, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict
    ) -> ChatResult | None:
        if index in self.settled:  # the same input generating twice: on its own, via /v1
            return None
        try:
            call = _native.chat_call(self.model, messages, stop, kwargs)
        except _native.NotNative as exc:
            log.debug("batch input %d goes through /v1: %s", index, exc.reason)
            self.leave(index)
            return None
        self.calls[index] = call
        self.outputs[index] = asyncio.get_running_loop().create_future()
        self.leave(index)
        with mapped_errors():
            var = await self.outputs[index]
            text = await var.aget(criteria=self.model.criteria)
        return _native.chat_result(text, var.usage)

    def leave(self, index: int) -> None:
        if index in self.settled:
            return
        self.settled.add(index)
        if len(self.settled) == self.size and self.calls and self._flush is None:
            self._flush = asyncio.ensure_future(self._submit_all())

    async def _submit_all(self) -> None:
        try:
            pool = self.model._sessions
            self._lease = await self._leases.enter_async_context(
                pool.alease(self.model.async_client)
            )
            group = new_id("batch")
            indices = sorted(self.calls)
            try:
                outputs: dict[int, Any] = await self._submit(indices, group)
            except InvalidRequestError:
                if len(indices) == 1:
                    raise
                log.debug(
                    "batch program rejected; resubmitting its %d calls one by one", len(indices)
                )
                outputs = {}
                for i in indices:
                    try:
                        outputs.update(await self._submit([i], group))
                    except ParrotError as err:
                        outputs[i] = err
            log.debug("batch: %d calls submitted as task group %s", len(indices), group)
            for i, out in outputs.items():
                if isinstance(out, BaseException):
                    self.outputs[i].set_exception(out)
                else:
                    self.outputs[i].set_result(out)
        except BaseException as exc:
            for fut in self.outputs.values():
                if fut.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    fut.cancel()
                else:
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    async def _submit(self, indices: list[int], group: str) -> dict[int, SemanticVariable]:
        async with self._lease.session.program() as program:
            outputs = {i: self.calls[i].add_to(program, task_group=group) for i in indices}
        self._lease.added += len(program.variables) + len(program.calls)
        return outputs

    async def aclose(self) -> None:
        if self._flush is not None:
            await asyncio.gather(self._flush, return_exceptions=True)
        await self._leases.aclose()


class _Slot:
    """The hook of one batch input (`_hook.NativeHook`)."""

    def __init__(self, batch: ChatBatch, index: int) -> None:
        self.batch, self.index, self.model = batch, index, batch.model

    def chat(self, model: Any, messages: Any, stop: Any, kwargs: dict) -> ChatResult | None:
        return None  # a sync generation inside an async batch: through /v1

    async def achat(self, model: Any, messages: Any, stop: Any, kwargs: dict) -> ChatResult | None:
        return await self.batch.join(self.index, messages, stop, kwargs)

    def complete(self, model: Any, prompts: Any, stop: Any, kwargs: dict) -> LLMResult | None:
        return None

    async def acomplete(
        self, model: Any, prompts: Any, stop: Any, kwargs: dict
    ) -> LLMResult | None:
        return None


async def abatch_chat(
    model: Any,
    inputs: Sequence[Any],
    configs: list[RunnableConfig],
    return_exceptions: bool,
    kwargs: dict,
) -> list[Any]:
    """LangChain's `abatch` for one group of inputs, their generations submitted together."""
    batch = ChatBatch(model, len(inputs))

    async def one(index: int) -> Any:
        with installed(_Slot(batch, index)):
            try:
                return await model.ainvoke(inputs[index], configs[index], **kwargs)
            finally:
                batch.leave(index)

    results = await asyncio.gather(*(one(i) for i in range(len(inputs))), return_exceptions=True)
    await batch.aclose()
    for r in results:
        if isinstance(r, BaseException) and (not return_exceptions or not isinstance(r, Exception)):
            raise r
    return results


# -- completion models --------------------------------------------------------------------------
def _calls(model: Any, prompts: list[str], stop: Any, kwargs: dict) -> list[Any] | None:
    try:
        return [_native.completion_call(model, p, stop, kwargs) for p in prompts]
    except _native.NotNative as exc:
        log.debug("completion batch goes through /v1: %s", exc.reason)
        return None


def complete(model: Any, prompts: list[str], stop: Any, kwargs: dict) -> LLMResult | None:
    """All prompts as one program (one task group); None when they cannot all be native."""
    calls = _calls(model, prompts, stop, kwargs)
    if calls is None:
        return None
    group = new_id("batch")
    with model._sessions.lease(model.client) as lease:
        with lease.session.program() as program:
            outputs = [c.add_to(program, task_group=group) for c in calls]
        lease.added += len(program.variables) + len(program.calls)
        answers = [(v.get(criteria=model.criteria), v.usage) for v in outputs]
    return _native.llm_result(answers)


async def acomplete(model: Any, prompts: list[str], stop: Any, kwargs: dict) -> LLMResult | None:
    calls = _calls(model, prompts, stop, kwargs)
    if calls is None:
        return None
    group = new_id("batch")
    async with model._sessions.alease(model.async_client) as lease:
        async with lease.session.program() as program:
            outputs = [c.add_to(program, task_group=group) for c in calls]
        lease.added += len(program.variables) + len(program.calls)
        texts = await asyncio.gather(*(v.aget(criteria=model.criteria) for v in outputs))
    return _native.llm_result([(t, v.usage) for t, v in zip(texts, outputs, strict=True)])
