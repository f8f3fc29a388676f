"""Wire conversion for the `Parrot` LLM: LlamaIndex messages/responses <-> OpenAI shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LogProb,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.llms.llm import ToolSelection
from pydantic import ValidationError

from .. import _http
from ..errors import InvalidRequestError
from ..protocol.openai import ChatCompletion, ChatCompletionChunk, Completion, Usage
from ..protocol.openai_logprobs import ChoiceLogprobs
from ..protocol.openai_tools import ToolCall

# LlamaIndex roles -> OpenAI wire roles ("chatbot"/"model" are other vendors' assistant).
ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "developer",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",  # additional_kwargs["tool_call_id"]: the call it answers
    MessageRole.FUNCTION: "function",  # legacy: refused by the server with a 400 that says so
}


def usage_fields(usage: Usage | None) -> dict[str, int]:
    """What `TokenCountingHandler` reads from `additional_kwargs` (it also reads raw["usage"])."""
    if usage is None:
        return {}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cached_tokens": usage.prompt_tokens_details.cached_tokens,
    }


# -- messages -----------------------------------------------------------------------------------
def to_wire(m: ChatMessage) -> dict[str, Any]:
    """A LlamaIndex message as an OpenAI one: its calls (`ToolCallBlock`s, or OpenAI dicts in
    `additional_kwargs["tool_calls"]`) and, for a tool result, the call id it answers."""
    wire: dict[str, Any] = {"role": ROLES.get(m.role, m.role.value), "content": m.content or ""}
    calls = [_block_call(b) for b in m.blocks if isinstance(b, ToolCallBlock)]
    calls += [_dict_call(c) for c in m.additional_kwargs.get("tool_calls") or ()]
    if calls:
        wire["tool_calls"] = calls
        wire["content"] = m.content or None
    if m.role == MessageRole.TOOL:
        wire["tool_call_id"] = m.additional_kwargs.get("tool_call_id")
    return wire


def _block_call(b: ToolCallBlock) -> dict[str, Any]:
    args = b.tool_kwargs if isinstance(b.tool_kwargs, str) else json.dumps(b.tool_kwargs)
    return {
        "id": b.tool_call_id,
        "type": "function",
        "function": {"name": b.tool_name, "arguments": args},
    }


def _dict_call(call: Any) -> dict[str, Any]:
    return call.model_dump() if hasattr(call, "model_dump") else dict(call)


def answer_message(text: str, calls: list[ToolCall]) -> ChatMessage:
    """The assistant's answer: its text, then one `ToolCallBlock` per call."""
    blocks: list[Any] = [TextBlock(text=text)] if text or not calls else []
    for call in calls:
        blocks.append(
            ToolCallBlock(
                tool_call_id=call.id,
                tool_name=call.function.name,
                tool_kwargs=call.function.parsed_arguments,
            )
        )
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks)


def tool_selections(message: ChatMessage) -> list[ToolSelection]:
    return [
        ToolSelection(
            tool_id=b.tool_call_id or "",
            tool_name=b.tool_name,
            tool_kwargs=b.tool_kwargs if isinstance(b.tool_kwargs, dict) else {},
        )
        for b in message.blocks
        if isinstance(b, ToolCallBlock)
    ]


# -- responses ----------------------------------------------------------------------------------
def chat_response(body: ChatCompletion) -> ChatResponse:
    message = body.choices[0].message if body.choices else None
    text = (message.content or "") if message else ""
    return ChatResponse(
        message=answer_message(text, (message.tool_calls or []) if message else []),
        raw=body.model_dump(),
        additional_kwargs=usage_fields(body.usage),
        logprobs=token_logprobs(body.choices[0].logprobs) if body.choices else None,
    )


def token_logprobs(logprobs: ChoiceLogprobs | None) -> list[list[LogProb]] | None:
    """Per generated token, its most likely alternatives: the shape LlamaIndex's OpenAI LLM
    gives."""
    if logprobs is None or logprobs.content is None:
        return None
    return [
        [LogProb(token=t.token, logprob=t.logprob, bytes=t.bytes or []) for t in entry.top_logprobs]
        for entry in logprobs.content
    ]


class ChatStream:
    """Stream chunks as LlamaIndex's responses: each carries the message so far (text and the
    calls complete so far). Chunks with no text, call or usage give None."""

    def __init__(self) -> None:
        self.text = ""
        self.calls: list[ToolCall] = []

    def feed(self, chunk: ChatCompletionChunk) -> ChatResponse | None:
        delta = chunk.choices[0].delta if chunk.choices else None
        text = (delta.content or "") if delta else ""
        for d in (delta.tool_calls or ()) if delta else ():
            # The server sends each call whole, in one delta.
            call = {"name": d.function.name, "arguments": d.function.arguments}
            self.calls.append(ToolCall(id=d.id or "", function=call))
        if not text and chunk.usage is None and not (delta and delta.tool_calls):
            return None
        self.text += text
        return ChatResponse(
            message=answer_message(self.text, self.calls),
            delta=text,
            raw=chunk.model_dump(),
            additional_kwargs=usage_fields(chunk.usage),
        )


def completion_piece(chunk: Completion, so_far: str) -> CompletionResponse | None:
    delta = chunk.choices[0].text if chunk.choices else ""
    if not delta and chunk.usage is None:
        return None
    return CompletionResponse(
        text=so_far + delta,
        delta=delta,
        raw=chunk.model_dump(),
        additional_kwargs=usage_fields(chunk.usage),
    )


def chat_pieces(chunks: Iterator[ChatCompletionChunk]) -> Iterator[ChatResponse]:
    stream = ChatStream()
    for chunk in chunks:
        if (piece := stream.feed(chunk)) is not None:
            yield piece


def completion_pieces(chunks: Iterator[Completion]) -> Iterator[CompletionResponse]:
    text = ""
    for chunk in chunks:
        if (piece := completion_piece(chunk, text)) is not None:
            text = piece.text
            yield piece


def build_request(cls: type, **fields: Any) -> Any:
    """A request validated client-side: a bad value is the SDK's `InvalidRequestError`."""
    try:
        return cls(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise InvalidRequestError(_http.validation_message(exc)) from exc


def user_message(prompt: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.USER, content=prompt)


def as_completion(r: ChatResponse) -> CompletionResponse:
    return CompletionResponse(
        text=r.message.content or "",
        delta=r.delta,
        raw=r.raw,
        additional_kwargs=r.additional_kwargs,
        logprobs=r.logprobs,
    )


def as_chat(r: CompletionResponse) -> ChatResponse:
    return ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, content=r.text),
        delta=r.delta,
        raw=r.raw,
        additional_kwargs=r.additional_kwargs,
    )
