"""Wire conversion: LangChain messages <-> OpenAI-shaped dicts, responses -> LangChain outputs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import InputTokenDetails, UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call
from langchain_core.outputs import ChatGeneration, ChatResult, Generation, LLMResult

from ..errors import InvalidRequestError
from ..protocol.native import OutputUsage
from ..protocol.openai import ChatCompletion, ChatCompletionChunk, PromptTokensDetails, Usage
from ..protocol.openai_tools import ToolCall

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
    extra: dict[str, Any] = {}
    if isinstance(message, SystemMessage):
        role = "system"
    elif isinstance(message, HumanMessage):
        role = "user"
    elif isinstance(message, AIMessage):
        role = "assistant"
        extra = _calls_to_dicts(message)
    elif isinstance(message, ToolMessage):
        role = "tool"
        extra = {"tool_call_id": message.tool_call_id}
    elif isinstance(message, ChatMessage):
        role = message.role
    else:  # FunctionMessage (legacy), ...
        raise InvalidRequestError(
            f"{type(message).__name__} is not supported: Parrot serves system, human, ai and "
            "tool messages"
        )
    content = message.content
    if isinstance(message, AIMessage) and isinstance(content, list):
        # Call blocks in the content repeat `tool_calls`, which is what is sent.
        content = [p for p in content if not _is_call_block(p)]
    out: dict[str, Any] = {"role": role, "content": _content(content), **extra}
    if extra.get("tool_calls") and not message.content:
        out["content"] = None  # as OpenAI sends an assistant turn that only calls tools
    if message.name:
        out["name"] = message.name  # accepted by the server, which ignores it
    return out


def _is_call_block(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") in ("tool_use", "tool_call")


def _calls_to_dicts(message: AIMessage) -> dict[str, Any]:
    calls = [
        {"id": c["id"], "name": c["name"], "arguments": json.dumps(c["args"], ensure_ascii=False)}
        for c in message.tool_calls
    ] + [
        {"id": c["id"], "name": c["name"], "arguments": c["args"] or ""}
        for c in message.invalid_tool_calls
    ]
    if not calls:
        return {}
    return {
        "tool_calls": [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in calls
        ]
    }


def messages_to_dicts(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return [message_to_dict(m) for m in messages]


# -- response -> outputs ------------------------------------------------------------------------
def native_usage(usage: OutputUsage) -> Usage:
    """A native output's usage in `/v1`'s shape, so both paths report it alike."""
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
    )


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


def chat_response_result(response: ChatCompletion) -> ChatResult:
    """One generation per choice (`n`), each message with the response's usage and each
    choice's log probabilities in `generation_info` (LangChain adds them to the message's
    `response_metadata`), as `ChatOpenAI` reports them."""
    generations = []
    for choice in response.choices:
        message = answer_message(
            choice.message.content or "",
            response.model,
            choice.finish_reason,
            response.usage,
            response.id,
            choice.message.tool_calls or [],
        )
        logprobs = choice.logprobs.model_dump() if choice.logprobs is not None else None
        generations.append(generation(message, logprobs))
    return chat_result(generations, response.usage, response.id)


def answer_message(
    text: str,
    model: str | None,
    finish_reason: str | None,
    usage: Usage | None,
    rid: str | None,
    calls: Sequence[ToolCall] = (),
) -> AIMessage:
    """A chat answer as `/v1` reports it; a native answer has no response id (LangChain gives
    the message its run id). Tool calls whose arguments do not parse are `invalid_tool_calls`."""
    metadata: dict[str, Any] = {
        "model_name": model,
        "finish_reason": finish_reason,
        "model_provider": PROVIDER,
    }
    if rid is not None:
        metadata["id"] = rid
    raw = [c.model_dump() for c in calls]
    tool_calls, invalid = [], []
    for call in raw:
        try:
            tool_calls.append(parse_tool_call(call, return_id=True))
        except Exception as err:  # OutputParserException: kept, with the reason
            invalid.append(make_invalid_tool_call(call, str(err)))
    return AIMessage(
        content=text,
        id=rid,
        usage_metadata=usage_metadata(usage) if usage else None,
        response_metadata=metadata,
        additional_kwargs={"tool_calls": raw} if raw else {},
        tool_calls=tool_calls,
        invalid_tool_calls=invalid,
    )


def generation(message: AIMessage, logprobs: dict[str, Any] | None = None) -> ChatGeneration:
    """An answer with its finish reason (and log probabilities) in `generation_info`."""
    info: dict[str, Any] = {"finish_reason": message.response_metadata.get("finish_reason")}
    if logprobs is not None:
        info["logprobs"] = logprobs
    return ChatGeneration(message=message, generation_info=info)


def chat_result(
    generations: list[ChatGeneration], usage: Usage | None, rid: str | None = None
) -> ChatResult:
    """Answers as the chat model's result: OpenAI's `token_usage` and the model name in
    `llm_output`."""
    llm_output: dict[str, Any] = {
        "token_usage": token_usage(usage),
        "model_name": generations[0].message.response_metadata.get("model_name"),
    }
    if rid is not None:
        llm_output["id"] = rid
    return ChatResult(generations=generations, llm_output=llm_output)


@dataclass(frozen=True)
class Completed:
    """One answer of a completion model: what `generation_info` reports of it."""

    text: str
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


def llm_result(answers: list[tuple[list[Completed], Usage | None]], model: str | None) -> LLMResult:
    """(answers, usage) per prompt as the completion model's result: usage summed over the
    prompts, as OpenAI's LLM does, and per prompt in each of its generations'
    `generation_info`, with the finish reason and log probabilities."""
    total = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0}
    generations = []
    for completed, usage in answers:
        if usage:
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                total[key] += getattr(usage, key)
            total["cached_tokens"] += usage.prompt_tokens_details.cached_tokens
        row = []
        for answer in completed:
            info: dict[str, Any] = {"finish_reason": answer.finish_reason}
            if answer.logprobs is not None:
                info["logprobs"] = answer.logprobs
            if usage:
                info["usage"] = usage.model_dump()
            row.append(Generation(text=answer.text, generation_info=info))
        generations.append(row)
    return LLMResult(
        generations=generations, llm_output={"token_usage": total, "model_name": model}
    )


def content_chunk(chunk: ChatCompletionChunk) -> AIMessageChunk | None:
    """The text or tool-call pieces of one streamed chunk, or None when it carries neither."""
    if not chunk.choices:
        return None
    delta = chunk.choices[0].delta
    if not delta.content and not delta.tool_calls:
        return None
    pieces = [
        tool_call_chunk(
            name=d.function.name if d.function else None,
            args=d.function.arguments if d.function else None,
            id=d.id,
            index=d.index,
        )
        for d in delta.tool_calls or ()
    ]
    return AIMessageChunk(content=delta.content or "", id=chunk.id, tool_call_chunks=pieces)


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
