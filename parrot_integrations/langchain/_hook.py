"""Where a model call's answer comes from when it is not a `/v1` request of its own.

`ChatParrot` / `ParrotLLM` ask `current(self)` first in each generation method. A hook is set
(in a context variable, so it follows the tasks LangChain spawns for one call) by:

- a batch (`_group.py`): each input's call joins one native program, submitted once;
- a shipped chain (`ship.py`): the call already ran on the server; LangChain's own `invoke`
  is replayed with the real prompt, so callbacks and tracing see a normal model run.

Everything else (callbacks, caching, input conversion) stays LangChain's own code path.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult, LLMResult


class NativeHook(Protocol):
    model: Any  # the one model instance the hook answers for

    def chat(
        self, model: Any, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict
    ) -> ChatResult | None:
        """The answer, or None: send the call through `/v1` as usual."""

    async def achat(
        self, model: Any, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict
    ) -> ChatResult | None: ...

    def complete(
        self, model: Any, prompts: list[str], stop: list[str] | None, kwargs: dict
    ) -> LLMResult | None: ...

    async def acomplete(
        self, model: Any, prompts: list[str], stop: list[str] | None, kwargs: dict
    ) -> LLMResult | None: ...


_HOOK: contextvars.ContextVar[NativeHook | None] = contextvars.ContextVar(
    "parrot_native_hook", default=None
)


def current(model: Any) -> NativeHook | None:
    """The hook for `model`; another model called meanwhile (a callback's own call, say) is
    not affected."""
    hook = _HOOK.get()
    return hook if hook is not None and hook.model is model else None


@contextmanager
def installed(hook: NativeHook) -> Iterator[None]:
    token = _HOOK.set(hook)
    try:
        yield
    finally:
        _HOOK.reset(token)
