"""The `ToolFormat` interface: one way of putting tools into a prompt and reading calls back.

A format renders the chat (tools, assistant calls and tool results included) as turns for the
model's chat template, gives the constraint that makes the output well formed, and parses the
output, streamed or whole, into text and calls.
"""

from __future__ import annotations

import abc
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from parrot_integrations.protocol.openai import ChatCompletionRequest
from parrot_integrations.protocol.openai_tools import FunctionCall, ToolCall


@dataclass(frozen=True)
class TextPiece:
    """Answer text, in output order."""

    text: str


@dataclass(frozen=True)
class CallPiece:
    """One complete call; `index` counts the answer's calls from 0."""

    index: int
    call: ToolCall


Piece = TextPiece | CallPiece


class OutputParser(abc.ABC):
    """Reads one answer as it is generated."""

    @abc.abstractmethod
    def feed(self, text: str) -> list[Piece]:
        """What the text generated so far, now `text` longer, completes."""

    @abc.abstractmethod
    def finish(self) -> list[Piece]:
        """What is left once generation ended (also when cut short by a limit)."""


class PlainText(OutputParser):
    """No tools: the output is the answer."""

    def feed(self, text: str) -> list[Piece]:
        return [TextPiece(text)] if text else []

    def finish(self) -> list[Piece]:
        return []


@dataclass(frozen=True)
class ChatPrompt:
    """What the model's chat template renders: the turns, and the tools when the template
    takes them itself."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None


class ToolFormat(abc.ABC):
    @abc.abstractmethod
    def prompt(self, req: ChatCompletionRequest) -> ChatPrompt:
        """The request's messages (calls and results included) and tools, for the template."""

    @abc.abstractmethod
    def output_grammar(self, req: ChatCompletionRequest) -> str | None:
        """The EBNF grammar the answer follows when tools are offered (None: free text).
        A tool schema that cannot be compiled raises InvalidRequestError."""

    @abc.abstractmethod
    def parser(self, req: ChatCompletionRequest) -> OutputParser:
        """A reader for one answer to `req`."""


class CallCollector:
    """Numbers an answer's calls and gives each an id; a call repeated verbatim (a small model
    may loop) is made once."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def piece(self, name: str, arguments: Any) -> CallPiece | None:
        text = clean(json.dumps(arguments, ensure_ascii=False))
        if (name, text) in self.seen:
            return None
        call = ToolCall(id=new_call_id(), function=FunctionCall(name=name, arguments=text))
        self.seen.add((name, text))
        return CallPiece(len(self.seen) - 1, call)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(text: str) -> str:
    """`text` with lone UTF-16 surrogates (a JSON escape can make one) replaced, so it can be
    sent as UTF-8."""
    return _LONE_SURROGATE.sub("\ufffd", text)
