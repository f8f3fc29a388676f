"""Constraints as text, without a tokenizer: parse checks (so a front server answers a bad
constraint with a 400 before any engine sees it) and grammars built from JSON schemas and from
a model family's tool-call syntax (xgrammar's structural tags), as EBNF that any engine takes.

xgrammar is imported on first use, not with this module: it imports torch, and the scheduling
code that imports this module must not.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
from typing import Any

from .errors import InvalidRequestError
from .sampling_params import ConstraintKind, SamplingParams

# xgrammar's messages start with where in its C++ sources they were raised.
_SOURCE_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: (Check failed: .*? is false: )?")

# What xgrammar raises for input it refuses. Its message quotes the input cut at a byte count:
# cut inside a character, the message itself fails to decode, and that is what is raised.
XGRAMMAR_ERRORS = (RuntimeError, UnicodeDecodeError)


def xgrammar_message(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):
        return "it does not parse (xgrammar's message about it is not valid UTF-8)"
    return _SOURCE_PREFIX.sub("", str(err).strip())


def _xgr() -> Any:
    try:
        return importlib.import_module("xgrammar")
    except ImportError:
        raise InvalidRequestError(
            "constrained decoding needs the xgrammar package: pip install xgrammar"
        ) from None


def check_constraint(sampling: SamplingParams) -> None:
    """Raises InvalidRequestError when the request's constraint does not parse (a schema,
    regex or grammar xgrammar cannot take)."""
    constraint = sampling.constraint
    if constraint is None:
        return
    kind, text = constraint
    grammar = _xgr().Grammar
    try:
        if kind is ConstraintKind.JSON_SCHEMA:
            grammar.from_json_schema(text)
        elif kind is ConstraintKind.REGEX:
            grammar.from_regex(text)
        else:
            grammar.from_ebnf(text)
    except XGRAMMAR_ERRORS as e:
        raise InvalidRequestError(f"invalid {kind.value}: {xgrammar_message(e)}") from None


@functools.lru_cache(maxsize=256)
def compact_json_grammar(schema: str) -> str:
    """An EBNF grammar of the JSON texts that follow `schema`, laid out as `json.dumps` writes
    them (", " and ": ", no other whitespace), so a model cannot spend tokens on layout."""
    try:
        return str(_xgr().Grammar.from_json_schema(schema, any_whitespace=False))
    except XGRAMMAR_ERRORS as e:
        raise InvalidRequestError(f"invalid JSON schema: {xgrammar_message(e)}") from None


def tool_call_grammar(family: str, tools: list[dict[str, Any]], choice: Any, parallel: bool) -> str:
    """An EBNF grammar of a model family's answers that may (`choice` "auto") or must
    ("required", or {"type": "function", "function": {"name": ...}}) call `tools` in that
    family's syntax, each call's arguments valid for its tool; `family` is one of xgrammar's
    built-in structural tag formats ("qwen_3", "llama", ...)."""
    return _tool_call_grammar(family, json.dumps(tools), json.dumps(choice), parallel)


@functools.lru_cache(maxsize=64)
def _tool_call_grammar(family: str, tools: str, choice: str, parallel: bool) -> str:
    xgr = _xgr()
    try:
        tag = xgr.get_builtin_structural_tag(
            family,
            tools=json.loads(tools),
            tool_choice=json.loads(choice),
            parallel_tool_calls=parallel,
            reasoning="disabled",
        )
        return str(xgr.Grammar.from_structural_tag(tag))
    except (RuntimeError, ValueError) as e:
        raise InvalidRequestError(f"invalid tools: {xgrammar_message(e)}") from None
