"""Values that do not exist yet, and what a compiled step asks of the driver that runs it.

At run time a step's input may hold symbolic parts: `Text` (a string that a native variable
will hold), `Message` (a `ChatParrot` answer whose text it will hold) and `SymPrompt` (a
prompt formatted by LangChain around such values, with stand-ins in their place), inside
dicts, lists and tuples. Steps (`_compile.py`) are generators that talk to the driver
(`ship.py`) by yielding requests, so one plan serves `invoke` and `ainvoke`:

- `Open(model)`: the open program to add the model's call to (None: another server);
- `Resolve(value)`: submit what was collected, and give back `value` with its symbolic parts
  read (this is where a chain is cut);
- `Local(runnable, input, slow)`: run a runnable here, with LangChain, on a real input; before
  a slow one (a barrier, a model call through `/v1`) what was collected is submitted, so the
  server works meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import BasePromptTemplate
from langchain_core.runnables import Runnable

from ..semantic import SemanticVariable
from . import _native


class ModelStep(Protocol):
    """A plan's model node as the replay of its callbacks sees it (`_compile.Model`)."""

    @property
    def runnable(self) -> Runnable:
        """Replayed with the shipped answer, so its callbacks fire as a plain run's would."""

    @property
    def model(self) -> BaseLanguageModel:
        """The `ChatParrot` / `ParrotLLM` whose call the replay answers."""


# -- values -------------------------------------------------------------------------------------
@dataclass(eq=False)
class ShippedCall:
    """A model step that became a native call: what the replay of its callbacks needs."""

    node: ModelStep  # the plan node: its runnable is replayed for the callbacks
    input: list[BaseMessage] | str  # the model's input, stand-ins in place of computed values
    output: SemanticVariable
    uses: list[SemanticVariable]  # the computed values its prompt holds
    answer: Any = None  # the model's return value (AIMessage / str), once replayed or read


@dataclass(frozen=True, eq=False)
class Text:
    var: SemanticVariable


@dataclass(frozen=True, eq=False)
class Message:
    call: ShippedCall


@dataclass(frozen=True, eq=False)
class SymPrompt:
    prompt: BasePromptTemplate
    input: Any  # the prompt's input, symbolic parts included
    rendered: PromptValue  # formatted by LangChain around stand-ins


_SYMBOLIC = (Text, Message, SymPrompt)


def map_leaves(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """`value` with `leaf` applied to every leaf of its dicts, lists and tuples."""
    if isinstance(value, dict) and type(value).__init__ is dict.__init__:
        return type(value)({k: map_leaves(v, leaf) for k, v in value.items()})
    if type(value) in (list, tuple):
        return type(value)(map_leaves(v, leaf) for v in value)
    return leaf(value)


def leaves(value: Any) -> list[Any]:
    found: list[Any] = []
    map_leaves(value, lambda x: found.append(x) if isinstance(x, _SYMBOLIC) else x)
    return found


def symbolic(value: Any) -> bool:
    return bool(leaves(value))


# -- requests to the driver ---------------------------------------------------------------------
@dataclass(frozen=True)
class Open:
    model: Any  # ChatParrot | ParrotLLM


@dataclass(frozen=True)
class Resolve:
    value: Any  # Text and Message leaves only


@dataclass(frozen=True)
class Local:
    runnable: Runnable
    input: Any
    slow: bool = False


Steps = Generator[Open | Resolve | Local, Any, Any]


@dataclass
class Compilation:
    """One run of a shipped chain: its stand-ins and the calls shipped so far, in order."""

    stand_ins: _native.StandIns = field(default_factory=_native.StandIns)
    calls: list[ShippedCall] = field(default_factory=list)

    def stand_in(self, value: Any, prompt_ok: bool = False) -> Any:
        """`value` with computed strings replaced by stand-ins (for LangChain to format)."""

        def leaf(x: Any) -> Any:
            if isinstance(x, Text):
                return self.stand_ins.of(x.var)
            if prompt_ok and isinstance(x, SymPrompt) and x is value:
                return x.rendered
            if isinstance(x, _SYMBOLIC):  # an AIMessage or prompt used as data
                raise _native.NotNative(f"a computed {type(x).__name__} as input", True)
            return x

        return map_leaves(value, leaf)


def concrete(value: Any, ctx: Compilation, always: bool = False) -> Steps:
    """`value` with every symbolic part computed (a cut, unless nothing is symbolic)."""
    if not always and not symbolic(value):
        return value
    rendered: dict[int, Any] = {}
    for sp in [x for x in leaves(value) if isinstance(x, SymPrompt)]:
        prompt_input = yield from concrete(sp.input, ctx)
        rendered[id(sp)] = yield Local(sp.prompt, prompt_input)
    value = map_leaves(value, lambda x: rendered.get(id(x), x))
    return (yield Resolve(value))


def run_locally(runnable: Runnable, value: Any, ctx: Compilation, slow: bool = False) -> Steps:
    real = yield from concrete(value, ctx)
    return (yield Local(runnable, real, slow))
