"""OpenAI-compatible wire protocol: `/v1/chat/completions`, `/v1/completions`, `/v1/models`.

Field names and shapes are OpenAI's, so the official `openai` client (and LangChain's
`ChatOpenAI`, LlamaIndex's `OpenAILike`) work unchanged. One copy, used by server and clients.

Which fields a request may carry, field by field, is in docs/openai.md (a 400 naming the field
beats silently different output): OpenAI's sampling fields and the usual vLLM/SGLang extras
(`openai_sampling.py`), logprobs (`openai_logprobs.py`), `n` choices, tools
(`openai_tools.py`). Fields Parrot cannot honour (`suffix`, audio, the legacy `functions`, ...)
pass only with their neutral value; fields OpenAI does not have are rejected, except Parrot's
`session_id` and `criteria` and the vLLM/SGLang extras (with the `openai` client, in
`extra_body`). `model` may be omitted or "default": the server's model answers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ._strict import StrictModel as _Strict
from .openai_logprobs import (
    MAX_CHAT_TOP_LOGPROBS,
    MAX_COMPLETION_LOGPROBS,
    ChoiceLogprobs,
    CompletionLogprobs,
)
from .openai_sampling import ResponseFormat as ResponseFormat  # re-exported for callers
from .openai_sampling import SamplingRequest, unsupported
from .openai_sampling import StreamOptions as StreamOptions
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


# What the server passes the chat template itself (`chat_template_kwargs` cannot replace them).
_RENDER_ARGS = frozenset(
    {
        "conversation",
        "messages",
        "tools",
        "documents",
        "chat_template",
        "tokenize",
        "add_generation_prompt",
        "continue_final_message",
        "return_dict",
        "return_assistant_tokens_mask",
    }
)


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_CHAT_TOP_LOGPROBS)
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM's: extra chat template variables
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
        "functions",
        "function_call",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
        "verbosity",
        "web_search_options",
        "moderation",
    )(unsupported)

    @field_validator("chat_template_kwargs")
    @classmethod
    def _free_template_names(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        taken = sorted(set(v or ()) & _RENDER_ARGS)
        if taken:
            raise PydanticCustomError(
                "invalid_value",
                "{names} are set by the server's chat rendering, not by chat_template_kwargs",
                {"names": ", ".join(taken)},
            )
        return v

    @model_validator(mode="after")
    def _choice_among_tools(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise PydanticCustomError("invalid_value", "top_logprobs needs logprobs to be true", {})
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
    def top_logprobs_wanted(self) -> int | None:
        """None: no log-probabilities; else how many alternatives per token."""
        return (self.top_logprobs or 0) if self.logprobs else None

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
    logprobs: int | None = Field(default=None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    best_of: int | None = None  # only equal to n: each choice is returned
    echo: bool | None = None  # the prompt's text starts each choice
    suffix: Any = None

    _check_completion_unsupported = field_validator("suffix")(unsupported)

    @model_validator(mode="after")
    def _best_of_and_echo(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of != self.choices:
            raise PydanticCustomError(
                "unsupported_parameter",
                "best_of must equal n ({n}): Parrot returns every choice it generates",
                {"n": self.choices},
            )
        if self.echo and self.logprobs is not None:
            raise PydanticCustomError(
                "unsupported_parameter",
                "echo with logprobs is not supported: Parrot does not score prompt tokens",
            )
        return self

    @property
    def top_logprobs_wanted(self) -> int | None:
        return self.logprobs

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
    logprobs: ChoiceLogprobs | None = None
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
    logprobs: ChoiceLogprobs | None = None
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
