"""`Parrot`: a llama-index-core `LLM` over Parrot's OpenAI-compatible API.

It subclasses `LLM` directly, not `CustomLLM`: CustomLLM's async methods call the sync ones,
so `asyncio.gather` over `acomplete` (what tree_summarize does) would run one call at a time.
Here every async method awaits `AsyncParrotClient`, so concurrent calls reach the server
together and are batched there.

All I/O goes through the SDK clients, so the base URL rules (`PARROT_BASE_URL`, server root,
trailing `/v1` accepted), API key, retries and typed exceptions (`InvalidRequestError`,
`NotFoundError`, ... with the server's message) are the SDK's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW, DEFAULT_NUM_OUTPUTS
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools import BaseTool

from .. import _http
from ..errors import NotFoundError
from ..protocol.openai import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
)
from ..protocol.openai_tools import named_choice
from ._connection import ServerConnection
from ._convert import (
    ChatStream,
    as_chat,
    as_completion,
    build_request,
    chat_pieces,
    chat_response,
    completion_piece,
    completion_pieces,
    to_wire,
    tool_selections,
    usage_fields,
    user_message,
)
from .tokenizer import ParrotTokenizer

log = logging.getLogger(__name__)


class Parrot(FunctionCallingLLM, ServerConnection):
    """Parrot's served model as a LlamaIndex chat LLM (drop-in for `OpenAILike`).

    ```python
    from parrot_integrations.llamaindex import Parrot
    llm = Parrot(temperature=0, max_tokens=64)      # PARROT_BASE_URL, default :8000
    print(llm.complete("Name a colour."))
    ```

    `complete` on a chat model sends one user message to `/v1/chat/completions` (as LlamaIndex's
    OpenAI LLM does); with `is_chat_model=False` `complete` uses `/v1/completions` (a raw
    prompt) and `chat` renders the messages with `messages_to_prompt`.

    A function-calling LLM (`chat_with_tools`, `FunctionAgent`, `structured_predict`): the
    server constrains each call's arguments to its tool's schema. An answer's calls are
    `ToolCallBlock`s of its message; tool results are `tool` messages whose
    `additional_kwargs["tool_call_id"]` names the call.
    """

    model: str = Field(
        default="default", description="Served model name; 'default' is the server's model."
    )
    temperature: float = Field(default=0.1, ge=0.0, le=2.0, description="0 is greedy.")
    max_tokens: int | None = Field(
        default=None, gt=0, description="Tokens to generate; None: up to the context window."
    )
    additional_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="More request fields (top_p, seed, stop, criteria, session_id, ...).",
    )
    context_window: int | None = Field(
        default=None, gt=0, description="None: the server's max_context_len (/model_info)."
    )
    is_chat_model: bool = Field(
        default=True, description="Use /v1/chat/completions (the chat template) for complete."
    )

    logprobs: bool | None = Field(
        default=None, description="Per token, its most likely alternatives in `logprobs`."
    )
    top_logprobs: int = Field(default=0, ge=0, le=20, description="Alternatives per token.")

    # What the server said ("name", "window"), asked once; the fields override it.
    _server_meta: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def class_name(cls) -> str:
        return "Parrot_llm"

    # -- metadata ---------------------------------------------------------------------------------
    def _served_name(self) -> str:
        """The model name: the field, or for "default" the server's (asked once)."""
        if self.model != "default":
            return self.model
        if "name" not in self._server_meta:
            models = self.client.list_models().data
            self._server_meta["name"] = models[0].id if models else self.model
        return self._server_meta["name"]

    def _context_window(self) -> int:
        """The field, else the server's. /v1/models has no context length (OpenAI's shape), so
        it comes from the engine's /model_info (asked once)."""
        if self.context_window is not None:
            return self.context_window
        if "window" not in self._server_meta:
            try:
                info = self.client._call(  # no SDK method for this engine route
                    _http.Call("GET", "/model_info", lambda r: r.json())
                )
                self._server_meta["window"] = int(info["max_context_len"])
            except (NotFoundError, KeyError, TypeError, ValueError) as exc:
                log.warning(
                    "no max_context_len from %s/model_info (%s); using %d: pass context_window=",
                    self.api_base,
                    exc,
                    DEFAULT_CONTEXT_WINDOW,
                )
                return DEFAULT_CONTEXT_WINDOW
        return self._server_meta["window"]

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self._context_window(),
            # What LlamaIndex reserves for the answer when packing prompts.
            num_output=self.max_tokens or DEFAULT_NUM_OUTPUTS,
            is_chat_model=self.is_chat_model,
            is_function_calling_model=self.is_chat_model,
            model_name=self._served_name(),
        )

    @property
    def tokenizer(self) -> ParrotTokenizer:
        """Counts with the server's model: `Settings.tokenizer = llm.tokenizer`."""
        return ParrotTokenizer(self)

    # -- requests ---------------------------------------------------------------------------------
    def _fields(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {"model": self.model, "temperature": self.temperature}
        if self.max_tokens is not None:
            fields["max_tokens"] = self.max_tokens
        return {**fields, **self.additional_kwargs, **kwargs}

    def _chat_fields(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        fields = self._fields(kwargs)
        if self.logprobs:  # chat only, as LlamaIndex's OpenAI LLM
            fields.setdefault("logprobs", True)
            fields.setdefault("top_logprobs", self.top_logprobs)
        return fields

    def _chat_request(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any], stream: bool
    ) -> ChatCompletionRequest:
        wire = [to_wire(m) for m in messages]
        fields = self._chat_fields(kwargs)
        if stream:  # the final chunk then carries the usage
            fields.update(stream=True, stream_options={"include_usage": True})
        return build_request(ChatCompletionRequest, messages=wire, **fields)

    def _completion_request(
        self, prompt: str, kwargs: dict[str, Any], stream: bool
    ) -> CompletionRequest:
        fields = self._fields(kwargs)
        # /v1/completions would default to 16 tokens (OpenAI's): use what metadata promises.
        fields.setdefault("max_tokens", DEFAULT_NUM_OUTPUTS)
        if stream:
            fields.update(stream=True, stream_options={"include_usage": True})
        return build_request(CompletionRequest, prompt=prompt, **fields)

    # -- responses --------------------------------------------------------------------------------
    @staticmethod
    def _chat_response(body: ChatCompletion) -> ChatResponse:
        return chat_response(body)

    @staticmethod
    def _completion_response(body: Completion) -> CompletionResponse:
        text = body.choices[0].text if body.choices else ""
        return CompletionResponse(
            text=text, raw=body.model_dump(), additional_kwargs=usage_fields(body.usage)
        )

    # -- sync -------------------------------------------------------------------------------------
    def _chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        if not self.is_chat_model:
            prompt = self.messages_to_prompt(messages)
            return as_chat(self._complete(prompt, **kwargs))
        return self._chat_response(
            self.client.chat_completion(self._chat_request(messages, kwargs, False))
        )

    def _complete(self, prompt: str, **kwargs: Any) -> CompletionResponse:
        if self.is_chat_model:
            return as_completion(self._chat([user_message(prompt)], **kwargs))
        return self._completion_response(
            self.client.completion(self._completion_request(prompt, kwargs, False))
        )

    def _stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        if not self.is_chat_model:
            prompt = self.messages_to_prompt(messages)
            return (as_chat(r) for r in self._stream_complete(prompt, **kwargs))
        request = self._chat_request(messages, kwargs, True)
        return chat_pieces(self.client.chat_completion_stream(request))

    def _stream_complete(self, prompt: str, **kwargs: Any) -> CompletionResponseGen:
        if self.is_chat_model:
            return (as_completion(r) for r in self._stream_chat([user_message(prompt)], **kwargs))
        request = self._completion_request(prompt, kwargs, True)
        return completion_pieces(self.client.completion_stream(request))

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages, **kwargs)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if not formatted:
            prompt = self.completion_to_prompt(prompt)
        return self._complete(prompt, **kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._stream_chat(messages, **kwargs)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        if not formatted:
            prompt = self.completion_to_prompt(prompt)
        return self._stream_complete(prompt, **kwargs)

    # -- async ------------------------------------------------------------------------------------
    async def _achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        if not self.is_chat_model:
            prompt = self.messages_to_prompt(messages)
            return as_chat(await self._acomplete(prompt, **kwargs))
        request = self._chat_request(messages, kwargs, False)
        return self._chat_response(await self.aclient.chat_completion(request))

    async def _acomplete(self, prompt: str, **kwargs: Any) -> CompletionResponse:
        if self.is_chat_model:
            return as_completion(await self._achat([user_message(prompt)], **kwargs))
        request = self._completion_request(prompt, kwargs, False)
        return self._completion_response(await self.aclient.completion(request))

    async def _astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> AsyncIterator[ChatResponse]:
        if not self.is_chat_model:
            prompt = self.messages_to_prompt(messages)
            async for r in self._astream_complete(prompt, **kwargs):
                yield as_chat(r)
            return
        stream = ChatStream()
        request = self._chat_request(messages, kwargs, True)
        async for chunk in self.aclient.chat_completion_stream(request):
            if (piece := stream.feed(chunk)) is not None:
                yield piece

    async def _astream_complete(
        self, prompt: str, **kwargs: Any
    ) -> AsyncIterator[CompletionResponse]:
        if self.is_chat_model:
            async for r in self._astream_chat([user_message(prompt)], **kwargs):
                yield as_completion(r)
            return
        text = ""
        request = self._completion_request(prompt, kwargs, True)
        async for chunk in self.aclient.completion_stream(request):
            if (piece := completion_piece(chunk, text)) is not None:
                text = piece.text
                yield piece

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self._achat(messages, **kwargs)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        if not formatted:
            prompt = self.completion_to_prompt(prompt)
        return await self._acomplete(prompt, **kwargs)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        return self._astream_chat(messages, **kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        if not formatted:
            prompt = self.completion_to_prompt(prompt)
        return self._astream_complete(prompt, **kwargs)

    # -- tools ------------------------------------------------------------------------------------
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """`chat` arguments offering `tools`: `tool_required` (or "required") forces a call,
        `tool_choice` may name one tool; without `allow_parallel_tool_calls` an answer makes at
        most one call."""
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(user_message(user_msg) if isinstance(user_msg, str) else user_msg)
        if not tools:
            return {"messages": messages, **kwargs}
        specs = [t.metadata.to_openai_tool(skip_length_check=True) for t in tools]
        if isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required"):
            tool_choice = named_choice(tool_choice)
        return {
            "messages": messages,
            "tools": specs,
            "tool_choice": tool_choice or ("required" if tool_required else "auto"),
            "parallel_tool_calls": allow_parallel_tool_calls,
            **kwargs,
        }

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = tool_selections(response.message)
        if not calls and error_on_no_tool_call:
            raise ValueError(f"expected at least one tool call, got: {response.message.content!r}")
        return calls
