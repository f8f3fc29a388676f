"""LCEL -> Parrot native programs: the plan of a chain, and how each of its steps runs on
values that may not exist yet.

`plan(runnable)` maps the LCEL graph once, when the chain is shipped. Compiled steps:
sequences, `RunnableParallel` (and dict literals, coerced to it), `RunnablePassthrough` (without
a side function), `.assign(...)`, `.pick(...)`, `operator.itemgetter` wrapped as a
`RunnableLambda`, `PromptTemplate` / `ChatPromptTemplate`, `ChatParrot` / `ParrotLLM` (also
under `.bind(...)`), `StrOutputParser`, and bindings that only carry config. Anything else is a
`Barrier`: it runs locally, on real values.

Each node's `run(value, ctx)` computes its step on values that may not exist yet (see
`_symbolic.py`): pure steps work on them directly (a prompt is formatted around stand-ins, a
parser takes the model's text variable), a model step becomes one native call (`_native.py`)
added to the open program, and steps that need real values ask the driver to cut there.
"""

from __future__ import annotations

import logging
import operator
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import BasePromptTemplate, ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import (
    Runnable,
    RunnableBinding,
    RunnableLambda,
    RunnableParallel,
    RunnablePassthrough,
    RunnableSequence,
)
from langchain_core.runnables.passthrough import RunnableAssign, RunnablePick
from langchain_core.runnables.utils import AddableDict

from ..semantic import SemanticVariable
from . import _native
from ._symbolic import (
    Compilation,
    Local,
    Message,
    Open,
    ShippedCall,
    Steps,
    SymPrompt,
    Text,
    concrete,
    run_locally,
    symbolic,
)
from .chat_models import ChatParrot
from .llms import ParrotLLM

log = logging.getLogger("parrot_integrations.langchain.ship")


# -- plan nodes ---------------------------------------------------------------------------------
class Node:
    def __init__(self, runnable: Runnable) -> None:
        self.runnable = runnable

    @property
    def ships(self) -> bool:
        """No barrier inside: the whole step compiles into the program."""
        return True

    def cuts(self) -> list[Barrier]:
        return []

    def describe(self) -> str:
        return type(self.runnable).__name__

    def run(self, value: Any, ctx: Compilation) -> Steps:
        raise NotImplementedError


class _Composite(Node):
    children: list[Node]

    @property
    def ships(self) -> bool:
        return all(c.ships for c in self.children)

    def cuts(self) -> list[Barrier]:
        return [b for c in self.children for b in c.cuts()]


class Seq(_Composite):
    def __init__(self, runnable: RunnableSequence) -> None:
        super().__init__(runnable)
        self.children = [plan(s) for s in runnable.steps]

    def describe(self) -> str:
        return " | ".join(c.describe() for c in self.children)

    def run(self, value: Any, ctx: Compilation) -> Steps:
        for step in self.children:
            value = yield from step.run(value, ctx)
        return value


class Parallel(_Composite):
    def __init__(self, runnable: RunnableParallel) -> None:
        super().__init__(runnable)
        self.branches = {k: plan(v) for k, v in runnable.steps__.items()}
        self.children = list(self.branches.values())

    def describe(self) -> str:
        return "{" + ", ".join(f"{k}: {v.describe()}" for k, v in self.branches.items()) + "}"

    def run(self, value: Any, ctx: Compilation) -> Steps:
        out: dict[str, Any] = {}
        # Shippable branches first: their calls then join the program before any cut.
        for key in sorted(self.branches, key=lambda k: not self.branches[k].ships):
            out[key] = yield from self.branches[key].run(value, ctx)
        return {k: out[k] for k in self.branches}


class Assign(_Composite):
    def __init__(self, runnable: RunnableAssign) -> None:
        super().__init__(runnable)
        self.mapper = Parallel(runnable.mapper)
        self.children = [self.mapper]

    def describe(self) -> str:
        return f"assign{self.mapper.describe()}"

    def run(self, value: Any, ctx: Compilation) -> Steps:
        if not isinstance(value, dict):
            return (yield from run_locally(self.runnable, value, ctx))
        mapped = yield from self.mapper.run(value, ctx)
        return {**value, **mapped}


class Identity(Node):
    def run(self, value: Any, ctx: Compilation) -> Steps:
        return value
        yield  # a generator like the others


class Select(Node):
    """`itemgetter` in a `RunnableLambda`, or `RunnablePick`: picks parts of a dict."""

    def describe(self) -> str:
        r = self.runnable
        return repr(r.func) if isinstance(r, RunnableLambda) else f"pick({r.keys!r})"

    def _select(self, value: Any) -> Any:
        r = self.runnable
        if isinstance(r, RunnableLambda):
            return r.func(value)
        if isinstance(r.keys, str):
            return value.get(r.keys)
        picked = {k: value.get(k) for k in r.keys if k in value}
        return AddableDict(picked) if picked else None  # as RunnablePick

    def run(self, value: Any, ctx: Compilation) -> Steps:
        if symbolic(value) and isinstance(value, (dict, list, tuple)):
            try:
                return self._select(value)
            except Exception:  # noqa: BLE001 - reproduced below, with the real values
                pass
        return (yield from run_locally(self.runnable, value, ctx))


class Prompt(Node):
    def run(self, value: Any, ctx: Compilation) -> Steps:
        prompt: BasePromptTemplate = self.runnable
        if not symbolic(value):
            return (yield Local(prompt, value))
        try:
            kwargs = ctx.stand_in(value)
            if not isinstance(kwargs, dict):  # as BasePromptTemplate.invoke maps one value
                (name,) = prompt.input_variables
                kwargs = {name: kwargs}
            return SymPrompt(prompt, value, prompt.format_prompt(**kwargs))
        except Exception:  # noqa: BLE001 - reproduced below, with the real values
            return (yield from run_locally(prompt, value, ctx))


class Parse(Node):
    """`StrOutputParser`: a model's answer as its text."""

    def run(self, value: Any, ctx: Compilation) -> Steps:
        if isinstance(value, Message):
            return Text(value.call.output)
        if isinstance(value, Text):
            return value
        return (yield from run_locally(self.runnable, value, ctx))


class Model(Node):
    def __init__(self, runnable: Runnable, model: ChatParrot | ParrotLLM, kwargs: dict) -> None:
        super().__init__(runnable)
        self.model = model
        self.stop = kwargs.get("stop")
        self.kwargs = {k: v for k, v in kwargs.items() if k != "stop"}

    def describe(self) -> str:
        names = [*self.kwargs, *(["stop"] if self.stop is not None else [])]
        bound = f".bind({', '.join(names)})" if names else ""
        return f"{type(self.model).__name__}{bound}"

    def _call(self, value: Any, ctx: Compilation) -> tuple[_native.NativeCall, Any]:
        cache = self.model.cache
        if isinstance(cache, BaseCache) or (cache is not False and get_llm_cache() is not None):
            raise _native.NotNative("a LangChain cache is set (it is consulted by invoke only)")
        model_input = ctx.stand_in(value, prompt_ok=True)
        try:
            prompt = self.model._convert_input(model_input)
        except Exception:  # noqa: BLE001 - LangChain raises it again when run locally
            raise _native.NotNative("not a model input") from None
        # Without computed parts there is nothing to stand in for (user text is kept as is).
        stand_ins = ctx.stand_ins if symbolic(value) else None
        if isinstance(self.model, ChatParrot):
            messages = prompt.to_messages()
            args = (self.model, messages, self.stop, self.kwargs, stand_ins)
            return _native.chat_call(*args), messages
        text = prompt.to_string()
        return _native.completion_call(self.model, text, self.stop, self.kwargs, stand_ins), text

    def run(self, value: Any, ctx: Compilation) -> Steps:
        try:
            call, model_input = self._call(value, ctx)
        except _native.NotNative as exc:
            if not exc.needs_values:
                log.debug("%s runs locally through /v1: %s", self.describe(), exc.reason)
                return (yield from run_locally(self.runnable, value, ctx, slow=True))
            log.debug("cut before %s: %s", self.describe(), exc.reason)
            value = yield from concrete(value, ctx)
            return (yield from self.run(value, ctx))
        program = yield Open(self.model)
        if program is None:
            log.debug("%s runs locally: its server is not the program's", self.describe())
            return (yield from run_locally(self.runnable, value, ctx, slow=True))
        uses = [v for v in call.inputs.values() if isinstance(v, SemanticVariable)]
        shipped = ShippedCall(self, model_input, call.add_to(program), uses)
        ctx.calls.append(shipped)
        return Message(shipped) if isinstance(self.model, ChatParrot) else Text(shipped.output)


class Barrier(Node):
    def __init__(self, runnable: Runnable, reason: str) -> None:
        super().__init__(runnable)
        self.reason = reason

    @property
    def ships(self) -> bool:
        return False

    def cuts(self) -> list[Barrier]:
        return [self]

    def describe(self) -> str:
        return f"<cut: {self.runnable.get_name()}>"

    def run(self, value: Any, ctx: Compilation) -> Steps:
        log.debug("cut at %s (%s): it runs locally", self.runnable.get_name(), self.reason)
        return (yield from run_locally(self.runnable, value, ctx, slow=True))


# -- LCEL -> plan -------------------------------------------------------------------------------
def plan(r: Runnable) -> Node:
    if isinstance(r, RunnableSequence):
        return Seq(r)
    if isinstance(r, RunnableParallel):
        return Parallel(r)
    if isinstance(r, RunnableAssign):
        return Assign(r)
    if isinstance(r, RunnablePick):
        return Select(r)
    if isinstance(r, RunnablePassthrough):
        if r.func is None and r.afunc is None:
            return Identity(r)
        return Barrier(r, "a passthrough with a side function")
    if isinstance(r, RunnableLambda) and isinstance(r.func, operator.itemgetter):
        return Select(r)
    if isinstance(r, (PromptTemplate, ChatPromptTemplate)):
        return Prompt(r)
    if type(r) is StrOutputParser:
        return Parse(r)
    if isinstance(r, (ChatParrot, ParrotLLM)):
        return Model(r, r, {})
    if isinstance(r, RunnableBinding) and not r.config_factories:
        if isinstance(r.bound, (ChatParrot, ParrotLLM)):
            return Model(r, r.bound, dict(r.kwargs))
        if not r.kwargs and not r.config.get("callbacks"):
            return plan(r.bound)  # config only (name, tags): the step itself is the bound one
    if isinstance(r, RunnableLambda):
        return Barrier(r, "a function")
    return Barrier(r, "not a step Parrot compiles")
