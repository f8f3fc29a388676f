"""Tools for a model whose chat template has no tool format (SmolLM2's, for one): the answer is
one JSON object, constrained by decoding to

    {"tool_calls": [{"name": <a tool>, "arguments": <valid for that tool>}, ...]}

or, when the model may answer instead (`tool_choice` "auto"),

    {"response": "<the answer>"}

(`response` follows `response_format`'s schema when one is given). The tools and this reply
format are described in the system turn; earlier calls go back as the same JSON in the
assistant's turn, and tool results as a user turn saying what each tool returned, since such
templates know no tool role.
"""

from __future__ import annotations

import json
import re
from typing import Any

from parrot_integrations.protocol.openai import ChatCompletionRequest, ChatMessage
from parrot_integrations.protocol.openai_tools import ToolUse

from ..engine.grammar_text import compact_json_grammar
from .format import (
    CallCollector,
    ChatPrompt,
    OutputParser,
    Piece,
    PlainText,
    TextPiece,
    ToolFormat,
    clean,
)

CALLS, ANSWER = "tool_calls", "response"
# Without parallel calls an answer carries one; with them, at most this many.
MAX_PARALLEL_CALLS = 8
RESULTS_NEXT = 'Reply {"response": ...} with the answer if these results are enough.'


class GenericJsonTools(ToolFormat):
    def prompt(self, req: ChatCompletionRequest) -> ChatPrompt:
        return ChatPrompt(self.turns(req))

    def output_grammar(self, req: ChatCompletionRequest) -> str | None:
        schema = self.output_schema(req)
        return None if schema is None else compact_json_grammar(schema)

    def turns(self, req: ChatCompletionRequest) -> list[dict[str, str]]:
        use = req.tool_use
        names = {c.id: c.function.name for m in req.messages for c in m.tool_calls or ()}
        turns: list[dict[str, str]] = []
        results: list[str] = []  # the tool results of one step share a user turn
        for m in req.messages:
            if m.role == "tool":
                name = names.get(m.tool_call_id or "", "a tool")
                results.append(f"The tool {name} returned: {m.text}")
                continue
            if results:
                turns.append(_results_turn(results))
                results = []
            if m.role == "assistant" and (m.tool_calls or use.tools):
                turns.append({"role": "assistant", "content": _assistant_json(m)})
            else:
                turns.append(m.to_template())
        if results:
            turns.append(_results_turn(results))
        if use.tools:
            instructions = _instructions(use)
            if turns and turns[0]["role"] == "system":
                turns[0] = {
                    "role": "system",
                    "content": turns[0]["content"] + "\n\n" + instructions,
                }
            else:
                turns.insert(0, {"role": "system", "content": instructions})
        return turns

    def output_schema(self, req: ChatCompletionRequest) -> str | None:
        use = req.tool_use
        if not use.tools:
            return None
        calls = {
            "type": "object",
            "properties": {
                CALLS: {
                    "type": "array",
                    "items": {"anyOf": [_call_schema(t.function) for t in use.tools]},
                    "minItems": 1,
                    "maxItems": MAX_PARALLEL_CALLS if use.parallel else 1,
                }
            },
            "required": [CALLS],
            "additionalProperties": False,
        }
        if use.required:
            return json.dumps(calls)
        response_format = req.response_format
        answer_text = response_format.schema_text if response_format else None
        answer = {
            "type": "object",
            "properties": {ANSWER: json.loads(answer_text) if answer_text else {"type": "string"}},
            "required": [ANSWER],
            "additionalProperties": False,
        }
        return json.dumps({"anyOf": [calls, answer]})

    def parser(self, req: ChatCompletionRequest) -> OutputParser:
        if not req.tool_use.tools:
            return PlainText()
        response_format = req.response_format
        return _JsonReplyParser(string_answer=not (response_format and response_format.schema_text))


def _call_schema(function: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "name": {"const": function.name},
            "arguments": function.parameters or {"type": "object"},
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _instructions(use: ToolUse) -> str:
    tools = "\n".join(
        json.dumps(
            {
                "name": t.function.name,
                "description": t.function.description or "",
                "parameters": t.function.parameters or {"type": "object"},
            },
            ensure_ascii=False,
        )
        for t in use.tools
    )
    lines = [
        "You can call these tools (each with the JSON schema of its arguments):",
        tools,
        "Reply with one JSON object and nothing else.",
        'To call a tool: {"tool_calls": [{"name": "<tool name>", "arguments": {<its arguments>}}]}',
    ]
    if not use.required:
        lines.append('To answer the user: {"response": "<your answer>"}')
        lines.append("Call a tool when you need what it returns; answer once you know enough.")
    return "\n".join(lines)


def _results_turn(results: list[str]) -> dict[str, str]:
    # Said plainly, with what to do next: small models then answer from the result rather
    # than call the same tool again (the other tools stay offered).
    text = "\n".join(results)
    return {"role": "user", "content": f"{text}\n{RESULTS_NEXT}"}


def _assistant_json(m: ChatMessage) -> str:
    if m.tool_calls:
        calls = [
            {"name": c.function.name, "arguments": c.function.parsed_arguments}
            for c in m.tool_calls
        ]
        return json.dumps({CALLS: calls}, ensure_ascii=False)
    return json.dumps({ANSWER: m.text}, ensure_ascii=False)


_HEAD = re.compile(r'\s*\{\s*"(tool_calls|response)"\s*:\s*')
_SPACE = re.compile(r"\s*")


class _JsonReplyParser(OutputParser):
    """Reads `{"tool_calls": [...]}` / `{"response": ...}` as it is generated: a string answer
    is passed on as it is decoded, each call once its object is complete."""

    def __init__(self, string_answer: bool) -> None:
        self.string_answer = string_answer
        self.text = ""
        self.branch: str | None = None
        self.pos = 0  # where the branch's unread value text starts
        self.shown = ""  # a string answer decoded so far
        self.opened = False  # the calls' array started
        self.closed = False  # ... and ended
        self.calls = CallCollector()
        self.decoder = json.JSONDecoder()

    def feed(self, text: str) -> list[Piece]:
        self.text += text
        if self.branch is None:
            head = _HEAD.match(self.text)
            if head is None:
                return []
            self.branch, self.pos = head.group(1), head.end()
        if self.branch == CALLS:
            return self._calls()
        return self._answer() if self.string_answer else []

    def finish(self) -> list[Piece]:
        if self.branch is None:  # cut before the format showed: the text as it is
            return [TextPiece(self.text)] if self.text else []
        if self.branch == CALLS or self.string_answer:
            return []
        start = _SPACE.match(self.text, self.pos).end()
        try:
            _, end = self.decoder.raw_decode(self.text, start)
        except ValueError:  # cut short
            end = len(self.text)
        return [TextPiece(clean(self.text[start:end]))]

    def _answer(self) -> list[Piece]:
        body = self.text[_SPACE.match(self.text, self.pos).end() :]
        if not body.startswith('"'):
            return []
        decoded = clean(_string_prefix(body[1:]))
        new, self.shown = decoded[len(self.shown) :], decoded
        return [TextPiece(new)] if new else []

    def _calls(self) -> list[Piece]:
        pieces: list[Piece] = []
        while not self.closed:
            i = _SPACE.match(self.text, self.pos).end()
            if i >= len(self.text):
                break
            c = self.text[i]
            if not self.opened or c == ",":
                self.opened, self.pos = True, i + 1  # past "[" or ","
                continue
            if c == "]":
                self.closed = True
                break
            try:
                obj, self.pos = self.decoder.raw_decode(self.text, i)
            except ValueError:  # not complete yet
                break
            piece = self.calls.piece(obj["name"], obj["arguments"])
            if piece is not None:
                pieces.append(piece)
        return pieces


def _string_prefix(body: str) -> str:
    """The decoded part of a JSON string's body (after its opening quote) whose escapes are
    complete, up to the closing quote if it came."""
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c == '"':
            break
        if c != "\\":
            i += 1
            continue
        if i + 1 >= n:
            break
        if body[i + 1] != "u":
            i += 2
            continue
        if i + 6 > n:
            break
        if 0xD800 <= int(body[i + 2 : i + 6], 16) < 0xDC00:
            # A high surrogate waits for what follows: json decodes a pair as one character.
            if i + 8 > n or (body[i + 6 : i + 8] == "\\u" and i + 12 > n):
                break
            if body[i + 6 : i + 8] == "\\u":
                i += 6
        i += 6
    return json.loads('"' + body[:i] + '"')
