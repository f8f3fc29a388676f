"""Tools for a model whose chat template has a tool format: the template renders the tools and
the history's calls and results itself (HF `apply_chat_template(tools=...)`), the model writes
calls in its own syntax, and the answer is constrained to that syntax with each call's
arguments valid for its tool (xgrammar's structural tag for the family).

Two syntaxes are known, recognised from the template text:
- Hermes / Qwen2.5 / Qwen3: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`;
- Llama 3.1+: `{"name": ..., "parameters": {...}}`.
Text outside the calls is the answer's content.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from parrot_integrations.protocol.openai import ChatCompletionRequest, ChatMessage
from parrot_integrations.protocol.openai_tools import named_choice

from ..engine.errors import InvalidRequestError
from ..engine.grammar_text import tool_call_grammar
from .format import (
    CallCollector,
    ChatPrompt,
    OutputParser,
    Piece,
    PlainText,
    TextPiece,
    ToolFormat,
)


@dataclass(frozen=True)
class CallSyntax:
    family: str  # xgrammar's structural-tag format for it
    start: str  # what opens a call in the output
    end: str | None  # what closes it; None: the call is the JSON object starting at `start`
    arguments_key: str


HERMES = CallSyntax("qwen_3", "<tool_call>", "</tool_call>", "arguments")
LLAMA = CallSyntax("llama", '{"name": ', None, "parameters")


def syntax_of(chat_template: str | None) -> CallSyntax | None:
    """The tool-call syntax a chat template teaches its model, if it renders tools at all."""
    if not chat_template or "tools" not in chat_template:
        return None
    if "<tool_call>" in chat_template:
        return HERMES
    if "<|python_tag|>" in chat_template or (
        '"parameters"' in chat_template and "<|eot_id|>" in chat_template
    ):
        return LLAMA
    return None


class TemplateTools(ToolFormat):
    def __init__(self, syntax: CallSyntax) -> None:
        self.syntax = syntax

    def prompt(self, req: ChatCompletionRequest) -> ChatPrompt:
        tools = [t.model_dump(exclude_none=True) for t in req.tool_use.tools]
        return ChatPrompt([_hf_message(m) for m in req.messages], tools or None)

    def output_grammar(self, req: ChatCompletionRequest) -> str | None:
        use = req.tool_use
        if not use.tools:
            return None
        if req.response_format is not None and req.response_format.schema_text is not None:
            raise InvalidRequestError(
                "response_format together with tools is not supported for this model's tool "
                "format; send one or the other"
            )
        tools = [t.model_dump(exclude_none=True) for t in use.tools]
        if not use.required:
            choice: Any = "auto"
        elif len(use.tools) == 1 and req.tool_choice not in (None, "required"):
            choice = named_choice(use.tools[0].function.name)
        else:
            choice = "required"
        return tool_call_grammar(self.syntax.family, tools, choice, use.parallel)

    def parser(self, req: ChatCompletionRequest) -> OutputParser:
        if not req.tool_use.tools:
            return PlainText()
        return _TaggedCallsParser(self.syntax)


def _hf_message(m: ChatMessage) -> dict[str, Any]:
    """A message as HF chat templates take it: calls with their arguments as objects."""
    out: dict[str, Any] = m.to_template()
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.parsed_arguments},
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


_SPACE_END = re.compile(r"\s*\Z")


class _TaggedCallsParser(OutputParser):
    """Text until a call opens, each call once complete. Text that may be the beginning of a
    call's opening, and trailing whitespace, wait for what follows (whitespace around calls is
    not content)."""

    def __init__(self, syntax: CallSyntax) -> None:
        self.syntax = syntax
        self.text = ""
        self.pos = 0  # everything before was passed on
        self.in_call = False
        self.calls = CallCollector()
        self.decoder = json.JSONDecoder()

    def feed(self, text: str) -> list[Piece]:
        self.text += text
        pieces: list[Piece] = []
        start = self.syntax.start
        while True:
            if not self.in_call:
                at = self.text.find(start, self.pos)
                if at < 0:
                    held = _partial_start(self.text, self.pos, start)
                    held = min(held, _SPACE_END.search(self.text, self.pos, held).start())
                    self._text(pieces, held)
                    return pieces
                self._text(pieces, _SPACE_END.search(self.text, self.pos, at).start())
                self.pos, self.in_call = at, True
            if not self._call(pieces):
                return pieces

    def finish(self) -> list[Piece]:
        if self.in_call:  # cut short inside a call: it is not made
            return []
        rest = self.text[self.pos :]
        if self.calls.seen:
            rest = rest.strip()
        self.pos = len(self.text)
        return [TextPiece(rest)] if rest else []

    def _text(self, pieces: list[Piece], end: int) -> None:
        if end > self.pos:
            chunk = self.text[self.pos : end]
            if not (self.calls.seen and not chunk.strip()):
                pieces.append(TextPiece(chunk))
            self.pos = end

    def _call(self, pieces: list[Piece]) -> bool:
        """Reads the call starting at `pos` if complete; False when it is not yet."""
        syntax = self.syntax
        try:
            if syntax.end is None:
                obj, end = self.decoder.raw_decode(self.text, self.pos)
            else:
                close = self.text.find(syntax.end, self.pos)
                if close < 0:
                    return False
                obj = json.loads(self.text[self.pos + len(syntax.start) : close])
                end = close + len(syntax.end)
        except ValueError:
            if syntax.end is None:
                return False  # the object is not complete yet
            obj = None  # a closed block that is not JSON: dropped
            end = close + len(syntax.end)
        if isinstance(obj, dict) and "name" in obj:
            piece = self.calls.piece(obj["name"], obj.get(syntax.arguments_key, {}))
            if piece is not None:
                pieces.append(piece)
        self.pos, self.in_call = end, False
        return True


def _partial_start(text: str, pos: int, start: str) -> int:
    """Where a suffix of text[pos:] that could be the beginning of `start` begins (len(text)
    when none)."""
    for k in range(min(len(start) - 1, len(text) - pos), 0, -1):
        if start.startswith(text[len(text) - k :]):
            return len(text) - k
    return len(text)
