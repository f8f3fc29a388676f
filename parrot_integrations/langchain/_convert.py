"""Wire conversion: LangChain messages <-> OpenAI-shaped dicts, responses -> LangChain outputs."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.ai import InputTokenDetails, UsageMetadata

from ..errors import InvalidRequestError
from ..protocol.openai import ChatCompletion, ChatCompletionChunk, Usage

PROVIDER = "parrot"


# -- messages -> request ------------------------------------------------------------------------
def _content(content: str | list[Any]) -> str | list[dict[str, Any]]:
    """Text stays text; a list becomes OpenAI content parts. Non-text parts are sent as they
    are, so the server's 400 names what it does not support (images, audio...)."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        else:
            parts.append(part)
    return parts


def message_to_dict(message: BaseMessage) -> dict[str, Any]:
    if isinstance(message, SystemMessage):
        role = "system"
    elif isinstance(message, HumanMessage):
        role = "user"
    elif isinstance(message, AIMessage):
        if message.tool_calls or message.invalid_tool_calls:
            raise InvalidRequestError("tool calls are not supported by Parrot yet")
        role = "assistant"
    elif isinstance(message, ChatMessage):
        role = message.role
    else:  # ToolMessage, FunctionMessage, ...: the server has no tool use yet
        raise InvalidRequestError(
            f"{type(message).__name__} is not supported: Parrot serves system, human and ai "
            "messages (no tool use yet)"
        )
    out: dict[str, Any] = {"role": role, "content": _content(message.content)}
    if message.name:
        out["name"] = message.name  # accepted by the server, which ignores it
    return out


def messages_to_dicts(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return [message_to_dict(m) for m in messages]


# -- response -> outputs ------------------------------------------------------------------------
def usage_metadata(usage: Usage) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        input_token_details=InputTokenDetails(cache_read=usage.prompt_tokens_details.cached_tokens),
    )


def token_usage(usage: Usage | None) -> dict[str, Any]:
    """`llm_output["token_usage"]`, as LangChain's OpenAI integrations report it."""
    if usage is None:
        return {}
    return usage.model_dump()


def ai_message(response: ChatCompletion) -> AIMessage:
    choice = response.choices[0]
    return AIMessage(
        content=choice.message.content or "",
        id=response.id,
        usage_metadata=usage_metadata(response.usage) if response.usage else None,
        response_metadata={
            "model_name": response.model,
            "finish_reason": choice.finish_reason,
            "model_provider": PROVIDER,
            "id": response.id,
        },
    )


def content_chunk(chunk: ChatCompletionChunk) -> AIMessageChunk | None:
    """The text of one streamed chunk, or None when it carries none."""
    if not chunk.choices or not chunk.choices[0].delta.content:
        return None
    return AIMessageChunk(content=chunk.choices[0].delta.content, id=chunk.id)


def final_chunk(
    rid: str, model: str, finish_reason: str | None, usage: Usage | None
) -> AIMessageChunk:
    """The closing chunk: usage and metadata once (chunks are summed, so strings set on
    several chunks would be concatenated)."""
    return AIMessageChunk(
        content="",
        id=rid,
        usage_metadata=usage_metadata(usage) if usage else None,
        response_metadata={
            "model_name": model,
            "finish_reason": finish_reason,
            "model_provider": PROVIDER,
        },
        chunk_position="last",
    )
