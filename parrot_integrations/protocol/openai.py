"""OpenAI-compatible wire protocol: `/v1/chat/completions`, `/v1/completions`, `/v1/models`.

Field names and shapes are OpenAI's, so the official `openai` client (and LangChain's
`ChatOpenAI`, LlamaIndex's `OpenAILike`) work unchanged. One copy, used by server and clients.

What a request may carry, decided field by field (a 400 naming the field beats silently
different output):

- Implemented: `model`, `messages` (string content or a list of text parts, joined by newlines;
  "developer" is the system turn), `prompt` (a string, a list of one string, token ids, or a
  list of one list of ids), `max_tokens`, `max_completion_tokens` (wins when both are given;
  chat without either runs to the end of the context window, completions default to 16 tokens
  as OpenAI's), `temperature` (0..2; 0 is greedy), `top_p` (0..1; 0 means the top token
  only, as OpenAI), `seed` (int64), `stop` (a string or up to 4), `n` (only 1), `stream`,
  `stream_options.include_usage`, `response_format` (`text`; `json_object`: the output is one
  JSON object; `json_schema`: it follows `json_schema.schema`, by constrained decoding, so it
  always does, `strict` or not, unless `max_tokens` cuts it short; chat and completions),
  and for chat `tools`, `tool_choice`, `parallel_tool_calls` (see `openai_tools.py`), with
  assistant `tool_calls` and `tool` messages (`tool_call_id` and content) in the history.
- Accepted and ignored, because they change nothing in the output: `user`,
  `safety_identifier`, `metadata`, `store`, `service_tier`, `prompt_cache_key`,
  `prompt_cache_retention`, `prompt_cache_options` (Parrot's prefix cache is automatic),
  `stream_options.include_obfuscation`, a message's `name`, and the
  neutral value of every field below.
- Rejected with a 400 naming the field unless given their neutral value: `logprobs`,
  `top_logprobs`, `logit_bias`, `frequency_penalty`, `presence_penalty` (only 0), the legacy
  `functions` (only empty) and `function_call` (only "none"/"auto"; use `tools`), `modalities`
  (only `["text"]`), `audio`, `prediction`, `reasoning_effort`, `verbosity`,
  `web_search_options`, `moderation`; for completions also `best_of` (only 1), `echo` (only
  false) and `suffix`. Messages with the legacy role `function` or `function_call`, or
  non-text content parts (images, audio, files) too.
- Fields OpenAI does not have are rejected (as OpenAI does), except Parrot's extensions:
  `session_id` (must name a live Parrot session, 404 if not, and keeps it from expiring),
  `criteria` ("latency" | "throughput": the engine priority, as for a Semantic Variable get),
  and `top_k`, `ignore_eos` (as vLLM and SGLang accept them). With the `openai` client, pass
  them in `extra_body`.
- A prompt plus `max_tokens` longer than the context window is not an error: generation stops
  at the window with `finish_reason="length"`. A prompt that alone fills it is a 400.
- `model` may be omitted or "default": the server's model answers. Another unknown name is a 404.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ._strict import StrictModel as _Strict
from .native import Criteria
from .openai_logprobs import ChatLogprobs, CompletionLogprobs
from .openai_tools import (
    MAX_TOOLS,
    ChatTool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolUse,
    unique_tool_names,
)

FinishReasonName = Literal["stop", "length", "tool_calls"]


def _no_choice(v: Any) -> bool:
    return v in (None, "none", "auto")


# Fields OpenAI has that Parrot does not implement: value -> acceptable (neutral) or not.
_NEUTRAL: dict[str, Any] = {
    "logprobs": lambda v: v is None or v is False,  # chat: a bool; completions: an int
    "top_logprobs": lambda v: v in (None, 0),
    "logit_bias": lambda v: not v,
    "frequency_penalty": lambda v: v in (None, 0),
    "presence_penalty": lambda v: v in (None, 0),
    "functions": lambda v: not v,
    "function_call": _no_choice,
    "modalities": lambda v: v is None or v == ["text"],
    "audio": lambda v: v is None,
    "prediction": lambda v: v is None,
    "reasoning_effort": lambda v: v is None,
    "verbosity": lambda v: v is None,
    "web_search_options": lambda v: v is None,
    "moderation": lambda v: v is None,
    "best_of": lambda v: v in (None, 1),
    "echo": lambda v: v in (None, False),
    "suffix": lambda v: v in (None, ""),
}


def _unsupported(value: Any, info: ValidationInfo) -> Any:
    if not _NEUTRAL[info.field_name](value):
        raise PydanticCustomError(
            "unsupported_parameter",
            "{field}={value} is not supported by Parrot's OpenAI-compatible API",
            {"field": info.field_name, "value": repr(value)},
        )
    return value


class StreamOptions(_Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # we never obfuscate: nothing to switch off


class JsonSchemaFormat(_Strict):
    """`response_format.json_schema`: a named JSON schema the output must follow."""

    model_config = ConfigDict(extra="forbid", serialize_by_alias=True)  # sent as "schema"

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    # `schema` would shadow a pydantic method; absent: any JSON object.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None  # the output follows the schema either way


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise PydanticCustomError(
                "invalid_value", "json_schema must be given exactly when type is 'json_schema'"
            )
        return self

    @property
    def schema_text(self) -> str | None:
        """The JSON schema the output must follow, as JSON text; None for free text."""
        if self.type == "text":
            return None
        schema = self.json_schema.schema_ if self.json_schema else None
        return json.dumps(schema if schema is not None else {"type": "object"})


class SamplingRequest(_Strict):
    """What chat and completion requests share."""

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # OpenAI's int64
    stop: str | list[str] | None = None
    n: int | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    # Accepted, no effect on the output.
    safety_identifier: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    # Not implemented: only their neutral value passes (see `_NEUTRAL`).
    logit_bias: dict[str, Any] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    # Parrot extensions.
    session_id: str | None = None
    criteria: Criteria | None = None
    top_k: int | None = None  # vLLM/SGLang extension; None or -1: off
    ignore_eos: bool = False  # vLLM/SGLang extension: generate exactly max_tokens

    _check_unsupported = field_validator("logit_bias", "frequency_penalty", "presence_penalty")(
        _unsupported
    )

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int | None) -> int:
        if v not in (None, 1):
            raise PydanticCustomError(
                "unsupported_parameter",
                "only n=1 is supported (one choice per request); got n={n}. "
                "Send n separate requests: they share the prompt's KV cache",
                {"n": v},
            )
        return 1

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise PydanticCustomError(
                "too_many_stops", "at most 4 stop sequences, got {k}", {"k": len(v)}
            )
        return v

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> SamplingRequest:
        if self.stream_options is not None and not self.stream:
            raise PydanticCustomError(
                "invalid_value", "stream_options is only allowed when stream is true"
            )
        return self

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


# -- chat -------------------------------------------------------------------------------------


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None  # accepted; the chat template has no place for it
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's calls
    tool_call_id: str | None = None  # a tool message: the call it answers
    # Not implemented: only absent passes.
    function_call: Any = None
    audio: Any = None

    @model_validator(mode="after")
    def _text_only(self) -> ChatMessage:
        def bad(msg: str) -> PydanticCustomError:
            return PydanticCustomError("unsupported_message", msg)

        if self.role == "function" or self.function_call is not None:
            raise bad("the legacy role 'function' and function_call are not supported: use tools")
        if self.audio is not None:
            raise bad("audio is not supported in messages")
        if self.tool_calls and self.role != "assistant":
            raise bad("only assistant messages carry tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise bad("a tool message needs tool_call_id, and only a tool message has one")
        if self.content is None and not (self.role == "assistant"):
            raise bad(f"a {self.role} message needs content")
        for part in self.content if isinstance(self.content, list) else ():
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(
                    "only text content parts (type 'text' with a string 'text') are supported; "
                    f"got type {part.get('type')!r}"
                )
        return self

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p["text"] for p in self.content)  # as vLLM joins text parts
        return self.content or ""

    def to_template(self) -> dict[str, str]:
        """For the model's chat template: OpenAI's "developer" is the system turn."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text}


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: Any = None
    top_logprobs: Any = None
    tools: list[ChatTool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: Any = None
    function_call: Any = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None
    moderation: Any = None

    _check_chat_unsupported = field_validator(
        "logprobs",
        "top_logprobs",
        "functions",
        "function_call",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
        "verbosity",
        "web_search_options",
        "moderation",
    )(_unsupported)

    @model_validator(mode="after")
    def _choice_among_tools(self) -> ChatCompletionRequest:
        names = unique_tool_names(self.tools)
        choice = self.tool_choice
        if choice is not None and not isinstance(choice, str):
            if choice.function.name not in names:
                raise PydanticCustomError(
                    "invalid_value",
                    "tool_choice names the function '{name}', which is not in tools",
                    {"name": choice.function.name},
                )
        elif choice == "required" and not names:
            raise PydanticCustomError("invalid_value", "tool_choice 'required' needs tools")
        return self

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def tool_use(self) -> ToolUse:
        """The tools offered to the model and whether it must call one."""
        choice, tools = self.tool_choice, list(self.tools or ())
        if choice == "none" or not tools:
            return ToolUse([], required=False, parallel=False)
        parallel = self.parallel_tool_calls is not False
        if choice is None or choice == "auto":
            return ToolUse(tools, required=False, parallel=parallel)
        if choice == "required":
            return ToolUse(tools, required=True, parallel=parallel)
        named = [t for t in tools if t.function.name == choice.function.name]
        return ToolUse(named, required=True, parallel=parallel)


# -- completions ------------------------------------------------------------------------------


class CompletionRequest(SamplingRequest):
    prompt: str | list[int]
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default for completions
    logprobs: Any = None
    best_of: Any = None
    echo: Any = None
    suffix: Any = None

    _check_completion_unsupported = field_validator("logprobs", "best_of", "echo", "suffix")(
        _unsupported
    )

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, v: Any) -> Any:
        # OpenAI batches several prompts in one request; Parrot serves one per request.
        if isinstance(v, list) and v and all(isinstance(p, (str, list)) for p in v):
            if len(v) != 1:
                raise PydanticCustomError(
                    "unsupported_parameter",
                    "only one prompt per request is supported, got {k}; send one request "
                    "per prompt (they run batched and share cached prefixes)",
                    {"k": len(v)},
                )
            return v[0]
        return v


# -- responses --------------------------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0  # prompt tokens served from Parrot's prefix cache


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatCompletionChoice(BaseModel):
    index: int = 0
    message: ChatCompletionMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReasonName


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None

    @model_serializer(mode="wrap")
    def _only_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # OpenAI's deltas carry only what changed: {"role": ...} first, {"content": ...}, {}.
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatCompletionChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReasonName | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]  # empty in the final usage chunk
    usage: Usage | None = None
    system_fingerprint: str | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReasonName | None  # None only in stream chunks before the last


class Completion(BaseModel):
    """A completion, and also each chunk of a streamed one (OpenAI uses one shape for both)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


CompletionChunk = Completion


# -- models -----------------------------------------------------------------------------------


# The name every Parrot server accepts for its model, as if none were given.
DEFAULT_MODEL_ALIAS = "default"


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "parrot"
    # vLLM's and SGLang's additions: what the name stands for, and its context window.
    root: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
