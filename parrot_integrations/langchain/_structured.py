"""Tools and structured output for `ChatParrot`: LangChain's tool and schema shapes as OpenAI
request fields, and the parsers that read the answers back.

Both rest on the server's constrained decoding: a call's arguments always follow its tool's
schema, and a `json_schema` answer always follows the schema (unless `max_tokens` cuts it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, Literal

import pydantic.v1
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from pydantic import BaseModel

from ..protocol.openai_tools import named_choice

ToolLike = dict[str, Any] | type | Callable | BaseTool
StructuredMethod = Literal["json_schema", "function_calling", "json_mode"]

_MODES = {"auto": "auto", "none": "none", "required": "required", "any": "required"}
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def openai_tools(tools: Sequence[ToolLike], strict: bool | None) -> list[dict[str, Any]]:
    """Pydantic classes, functions, LangChain tools and OpenAI dicts as OpenAI tools."""
    return [convert_to_openai_tool(t, strict=strict) for t in tools]


def tool_choice(choice: Any, names: list[str]) -> Any:
    """LangChain's `tool_choice` values as OpenAI's: "any" (and True) is "required", a tool's
    name (or a dict) picks that tool."""
    if choice is True:
        return "required"
    if choice is False:
        return "none"
    if isinstance(choice, str):
        if choice in names:  # a tool may be called "auto": its name wins
            return named_choice(choice)
        if choice in _MODES:
            return _MODES[choice]
        raise ValueError(f"tool_choice={choice!r} is none of the tools {names} nor a mode")
    return choice  # a dict: as OpenAI takes it


def _is_model(schema: Any) -> bool:
    return isinstance(schema, type) and issubclass(schema, (BaseModel, pydantic.v1.BaseModel))


def _answer_parser(schema: Any) -> Runnable:
    return PydanticOutputParser(pydantic_object=schema) if _is_model(schema) else JsonOutputParser()


def structured(
    model: Any,
    schema: Any,
    method: StructuredMethod,
    include_raw: bool,
    strict: bool | None,
) -> Runnable:
    """`with_structured_output` for `model`: the bound model piped into its parser."""
    if schema is None and method != "json_mode":
        raise ValueError(f"method={method!r} needs a schema")
    if method == "function_calling":
        name = convert_to_openai_tool(schema)["function"]["name"]
        llm = model.bind_tools(
            [schema],
            tool_choice=name,
            parallel_tool_calls=False,
            strict=strict,
            ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
        )
        parser: Runnable = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)
            if _is_model(schema)
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    elif method == "json_schema":
        json_schema = convert_to_json_schema(schema)
        name = _NAME_CHARS.sub("_", str(json_schema.get("title") or "output"))[:64]
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": json_schema, "strict": strict},
        }
        llm = model.bind(
            response_format=response_format,
            ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
        )
        parser = _answer_parser(schema)
    elif method == "json_mode":
        llm = model.bind(
            response_format={"type": "json_object"},
            ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
        )
        parser = _answer_parser(schema) if schema is not None else JsonOutputParser()
    else:
        raise ValueError(
            f"method={method!r}: use 'json_schema' (default), 'function_calling' or 'json_mode'"
        )
    if not include_raw:
        return llm | parser
    # {"raw", "parsed", "parsing_error"}: an answer that does not parse is returned, not raised.
    parse = RunnablePassthrough.assign(
        parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
    )
    unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parse.with_fallbacks([unparsed], exception_key="parsing_error")
