"""OpenAI's tool-calling shapes for `/v1/chat/completions`: tools, `tool_choice`, the calls an
answer (or a history message) carries, and their streamed deltas.

- `tools`: up to `MAX_TOOLS` functions, each with a unique name (letters, digits, `_`, `-`, at
  most 64) and a JSON schema for its arguments (`parameters`; absent: any JSON object).
- `tool_choice`: "none" (tools are not offered), "auto" (the model answers or calls tools; the
  default with tools), "required" (it calls at least one), or a named function (it calls that
  one). Naming a function that is not in `tools` is a 400.
- `parallel_tool_calls` (default true): an answer may call several tools at once (up to 8;
  a call repeated with the same arguments is made once); false: at most one.
- The arguments of every call follow its tool's schema: the output is constrained to it. A
  model whose chat template renders tools in a known syntax (Hermes/Qwen `<tool_call>`, Llama
  3.1 JSON) writes calls in that syntax; for any other the tools are described in the system
  turn and the answer is a JSON object `{"tool_calls": [...]}` or `{"response": ...}`
  (server/parrot_server/tool_calls/). `response_format` with tools: the answer follows it when
  the model does not call a tool (the generic format only; a 400 for the others).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer
from pydantic_core import PydanticCustomError

from ._strict import StrictModel

MAX_TOOLS = 128  # OpenAI's limit too
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class FunctionDefinition(StrictModel):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema; absent: any object
    strict: bool | None = None  # the arguments follow the schema either way


class ChatTool(StrictModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


def unique_tool_names(tools: list[ChatTool] | None) -> list[str]:
    """The tools' names; two tools of one name are a validation error."""
    names = [t.function.name for t in tools or ()]
    if len(set(names)) != len(names):
        raise PydanticCustomError("invalid_value", "tool names must be unique")
    return names


class NamedFunction(StrictModel):
    name: str


class NamedToolChoice(StrictModel):
    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


@dataclass(frozen=True)
class ToolUse:
    """What a request's tools and `tool_choice` come to."""

    tools: list[ChatTool]  # offered to the model; empty: none
    required: bool  # it must call one (no plain answer)
    parallel: bool  # it may call several at once


def named_choice(name: str) -> dict[str, Any]:
    """The `tool_choice` that names one function, as sent on the wire."""
    return {"type": "function", "function": {"name": name}}


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    @property
    def parsed_arguments(self) -> Any:
        """The arguments as a JSON value; their text as it is when it is not JSON."""
        try:
            return json.loads(self.arguments)
        except ValueError:
            return self.arguments


class ToolCall(BaseModel):
    """A call the assistant made: in an answer, or in a history message sent back."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class _OnlySet(BaseModel):
    @model_serializer(mode="wrap")
    def _only_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Stream deltas carry only what they add.
        return {k: v for k, v in handler(self).items() if v is not None}


class FunctionCallDelta(_OnlySet):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_OnlySet):
    """A streamed piece of the `index`-th call: its id, type and name come first."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None
