"""`ChatParrot`: a LangChain chat model served by Parrot's OpenAI-compatible chat API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_config_list
from pydantic import AliasChoices, ConfigDict, Field, model_validator

from ..errors import InvalidRequestError
from ..protocol.openai import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Usage
from . import _convert, _group, _hook, _native, _structured
from ._base import ParrotBase, run_private_loop
from ._errors import mapped_errors
from ._served_name import ls_model_name


class ChatParrot(ParrotBase, BaseChatModel):
    """Chat model on a Parrot server (`/v1/chat/completions`); a drop-in for `ChatOpenAI`.

        from parrot_integrations.langchain import ChatParrot
        llm = ChatParrot(temperature=0, max_tokens=64)   # $PARROT_BASE_URL, default :8000
        llm.invoke("Name three rivers.")

    Text messages (system, human, ai, tool); tools through `bind_tools`, structured output
    through `with_structured_output`, both by constrained decoding on the server, so arguments
    and answers always follow their schemas. No images. Errors are `langchain_core.exceptions`
    classes that are also the SDK's typed errors (see `_errors.py`).
    """

    # A misspelt or unsupported argument is an error, not silently dropped (LangChain's
    # models ignore extras by default). Other request fields go in `model_kwargs`.
    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(
        default=None, validation_alias=AliasChoices("max_tokens", "max_completion_tokens")
    )
    """Most tokens to generate (alias `max_completion_tokens`). None: up to the end of the
    context window."""

    stop: list[str] | str | None = Field(
        default=None, validation_alias=AliasChoices("stop", "stop_sequences")
    )
    """Stop sequences (alias `stop_sequences`, at most 4); a call's `stop` replaces them."""

    n: int | None = Field(default=None, ge=1)
    """Answers per prompt: `generate` gives n `ChatGeneration`s (`invoke` returns the first).
    Not with streaming."""

    logprobs: bool | None = None
    """Log probability of each generated token, in `response_metadata["logprobs"]` (OpenAI's
    `{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}`; streamed: each chunk's)."""

    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    """Alternatives listed per token with `logprobs=True`."""

    stream_usage: bool | None = None
    """Usage in the last streamed chunk (`usage_metadata`). None: yes (every Parrot server
    reports it); False: the stream carries none. A call's `stream_usage=` wins."""

    service_tier: str | None = None
    """Sent; no effect (one tier)."""

    store: bool | None = None
    """Sent; no effect (nothing is stored)."""

    reasoning_effort: str | None = None
    """Sent; the server refuses a value (400): its models have no reasoning setting."""

    verbosity: str | None = None
    """Sent; the server refuses a value (400)."""

    @model_validator(mode="after")
    def _one_answer_when_streaming(self) -> ChatParrot:
        if self.streaming and (self.n or 1) > 1:
            raise ValueError("n must be 1 when streaming")
        return self

    # -- LangChain metadata -----------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "parrot-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"base_url": self.base_url, **self._default_params()}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=_convert.PROVIDER,
            ls_model_name=ls_model_name(self, kwargs),
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        stop = stop or kwargs.get("stop") or self.stop
        if stop:
            params["ls_stop"] = [stop] if isinstance(stop, str) else list(stop)
        return params

    # -- request ------------------------------------------------------------------------------
    def _own_fields(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "logprobs": self.logprobs,
            "top_logprobs": self.top_logprobs,
            "service_tier": self.service_tier,
            "store": self.store,
            "reasoning_effort": self.reasoning_effort,
            "verbosity": self.verbosity,
        }

    def _default_params(self) -> dict[str, Any]:
        params = self._sampling()
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        if self.stop:
            params["stop"] = self.stop
        return params

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, stream: bool, **kwargs: Any
    ) -> ChatCompletionRequest:
        # Per-call kwargs (bind(...), invoke(..., model=...)) win over the fields. LangChain's
        # tracing hint reaches here when a shipped chain runs a bound model step itself.
        kwargs.pop("ls_structured_output_format", None)
        stream_usage = kwargs.pop("stream_usage", None)
        params = self._params(kwargs)
        if stop is not None:
            params["stop"] = stop
        params["messages"] = _convert.messages_to_dicts(messages)
        if stream:
            if (params.get("n") or 1) > 1:
                raise InvalidRequestError("n must be 1 when streaming", param="n")
            params["stream"] = True
            if stream_usage is None:
                stream_usage = self.stream_usage is not False
            if stream_usage:  # usage comes in a last chunk only when asked for
                params["stream_options"] = {"include_usage": True}
        return self._build(ChatCompletionRequest, params)

    @staticmethod
    def _result(response: ChatCompletion) -> ChatResult:
        return _convert.chat_response_result(response)

    # -- generation ---------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        hook = _hook.current(self)
        if hook is not None and (result := hook.chat(self, messages, stop, kwargs)) is not None:
            return result
        with mapped_errors():
            request = self._request(messages, stop, False, **kwargs)
            return self._result(self.client.chat_completion(request))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        hook = _hook.current(self)
        if (
            hook is not None
            and (result := await hook.achat(self, messages, stop, kwargs)) is not None
        ):
            return result
        with mapped_errors():
            request = self._request(messages, stop, False, **kwargs)
            return self._result(await self.async_client.chat_completion(request))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        hook = _hook.current(self)
        if hook is not None and (result := hook.chat(self, messages, stop, kwargs)) is not None:
            yield from _native.chat_chunks(result)  # the answer exists already: one chunk
            return
        with mapped_errors():
            request = self._request(messages, stop, True, **kwargs)
            state = _StreamState()
            for chunk in self.client.chat_completion_stream(request):
                out = state.feed(chunk)
                if out is not None:
                    if run_manager:
                        run_manager.on_llm_new_token(out.text, chunk=out)
                    yield out
            yield state.last()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        hook = _hook.current(self)
        if (
            hook is not None
            and (result := await hook.achat(self, messages, stop, kwargs)) is not None
        ):
            for chunk in _native.chat_chunks(result):
                yield chunk
            return
        with mapped_errors():
            request = self._request(messages, stop, True, **kwargs)
            state = _StreamState()
            async for chunk in self.async_client.chat_completion_stream(request):
                out = state.feed(chunk)
                if out is not None:
                    if run_manager:
                        await run_manager.on_llm_new_token(out.text, chunk=out)
                    yield out
            yield state.last()

    # -- token counting -------------------------------------------------------------------------
    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """The prompt tokens `/v1/chat/completions` would count for `messages` offered `tools`
        (its `usage.prompt_tokens`): rendered by the server's chat template, the assistant's
        turn opened (`POST /tokenize`). `get_num_tokens(text)` counts a text through
        `get_token_ids`."""
        if not messages:
            return 0
        with mapped_errors():
            return self.client.tokenize(
                messages=_convert.messages_to_dicts(messages),
                tools=_structured.openai_tools(tools, None) if tools else None,
                model=self.model,
            ).count

    # -- tools and structured output -----------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[_structured.ToolLike],
        *,
        tool_choice: Any = None,
        parallel_tool_calls: bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """The model with `tools` offered on every call (pydantic classes, functions, LangChain
        tools, OpenAI tool dicts). `tool_choice`: "auto" (default), "none", "required" (or
        "any", True), or a tool's name; `parallel_tool_calls=False`: at most one call per
        answer. `strict` is accepted: arguments follow their schema either way."""
        formatted = _structured.openai_tools(tools, strict)
        if tool_choice is not None:
            names = [t["function"]["name"] for t in formatted]
            kwargs["tool_choice"] = _structured.tool_choice(tool_choice, names)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: Any = None,
        *,
        method: _structured.StructuredMethod = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Answers parsed into `schema` (a pydantic class: instances; a JSON schema, TypedDict
        or OpenAI function: dicts). `method`: "json_schema" (the answer is constrained to the
        schema), "function_calling" (a forced call of a tool with that schema) or "json_mode"
        (any JSON object; the prompt must describe the shape). `include_raw`: a dict with
        `raw`, `parsed` and `parsing_error` instead of raising on an answer that does not
        parse (one cut short by `max_tokens`)."""
        if kwargs:
            raise ValueError(f"unsupported arguments: {sorted(kwargs)}")
        return _structured.structured(self, schema, method, include_raw, strict)

    # -- batches ------------------------------------------------------------------------------
    def batch(
        self,
        inputs: Sequence[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[BaseMessage]:
        """`abatch` (one native program, one task group) in a private event loop."""
        if not inputs:
            return []

        async def run() -> list[BaseMessage]:
            try:
                return await self.abatch(
                    inputs, config, return_exceptions=return_exceptions, **kwargs
                )
            finally:
                await self._close_async_client()  # its loop ends with this call

        return run_private_loop(run)

    async def abatch(
        self,
        inputs: Sequence[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[BaseMessage]:
        """LangChain's `ainvoke` per input (configs, callbacks, errors as `abatch`), but the
        generations are submitted together as one native program whose calls form one task
        group (see `_group.py`); a call a native call cannot express goes through `/v1`.
        With `max_concurrency`, each run of that many inputs is one group."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        step = configs[0].get("max_concurrency") or len(inputs)
        out: list[Any] = []
        for start in range(0, len(inputs), step):
            part = slice(start, start + step)
            out += await _group.abatch_chat(
                self, inputs[part], configs[part], return_exceptions, kwargs
            )
        return out


class _StreamState:
    """Turns OpenAI chunks into LangChain chunks; usage and metadata go in one last chunk."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def feed(self, chunk: ChatCompletionChunk) -> ChatGenerationChunk | None:
        self.id, self.model = chunk.id, chunk.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.choices and chunk.choices[0].finish_reason is not None:
            self.finish_reason = chunk.choices[0].finish_reason
        message = _convert.content_chunk(chunk)
        logprobs = chunk.choices[0].logprobs if chunk.choices else None
        if message is None and logprobs is None:
            return None
        if message is None:  # log probabilities of tokens whose text is still held back
            message = AIMessageChunk(content="", id=chunk.id)
        info = None if logprobs is None else {"logprobs": logprobs.model_dump()}
        return ChatGenerationChunk(message=message, generation_info=info)

    def last(self) -> ChatGenerationChunk:
        message = _convert.final_chunk(self.id, self.model, self.finish_reason, self.usage)
        return ChatGenerationChunk(
            message=message, generation_info={"finish_reason": self.finish_reason}
        )
