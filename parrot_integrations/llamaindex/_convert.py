"""Wire conversion for the `Parrot` LLM: LlamaIndex messages/responses <-> OpenAI shapes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    MessageRole,
)
from pydantic import ValidationError

from .. import _http
from ..errors import InvalidRequestError
from ..protocol.openai import ChatCompletionChunk, Completion, Usage

# LlamaIndex roles -> OpenAI wire roles ("chatbot"/"model" are other vendors' assistant).
ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "developer",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",  # refused by the server with a 400 that says so
    MessageRole.FUNCTION: "function",
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


def chat_piece(chunk: ChatCompletionChunk, so_far: str) -> ChatResponse | None:
    """One stream chunk as LlamaIndex's (message = the text so far); None for chunks with no
    text and no usage (the role-only first one, the finish one). The last has the usage."""
    delta = (chunk.choices[0].delta.content or "") if chunk.choices else ""
    if not delta and chunk.usage is None:
        return None
    return ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, content=so_far + delta),
        delta=delta,
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
    text = ""
    for chunk in chunks:
        if (piece := chat_piece(chunk, text)) is not None:
            text = piece.message.content or ""
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
    )


def as_chat(r: CompletionResponse) -> ChatResponse:
    return ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, content=r.text),
        delta=r.delta,
        raw=r.raw,
        additional_kwargs=r.additional_kwargs,
    )
