"""`POST /tokenize` and `POST /detokenize`, in vLLM's shapes: a text or a chat as the server's
model tokenizes it, and token ids back to text. One copy, used by server and clients.

- `/tokenize` takes exactly one of `prompt` (a text) or `messages` (a chat, in
  `/v1/chat/completions`' shape, rendered by the model's chat template exactly as that route
  renders it, `tools` included). `add_special_tokens` defaults to true for a prompt and false for
  messages (the template writes them), as vLLM's. Parrot's `/v1/completions` and native calls
  add no special tokens to a text: pass `add_special_tokens=false` for the count they see (the
  same for a tokenizer that adds none, such as the default model's). The chat-only fields
  (`add_generation_prompt`, default true; `continue_final_message`, default false, which leaves
  the last message open and so implies no generation prompt; `tools`) are a 400 with a prompt.
  The answer: `count`, `max_model_len` (the context window), `tokens`, and `token_strs` (each
  id's vocabulary entry) only when `return_token_strs`.
- `/detokenize` takes `tokens` and answers `{"prompt": text}`, special tokens included; an id
  outside the vocabulary is a 400.
- `model` as on `/v1`: absent, "default" or the served name; another name is a 404.
- The text to tokenize (a prompt, or the rendered chat) and the ids to detokenize are bounded by
  the server's `--max-value-chars`: a 400 beyond.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from ._strict import StrictModel
from .openai import ChatMessage
from .openai_tools import MAX_TOOLS, ChatTool, unique_tool_names

_CHAT_ONLY = ("add_generation_prompt", "continue_final_message", "tools")


class TokenizeRequest(StrictModel):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    add_special_tokens: bool | None = None  # None: true for a prompt, false for messages
    add_generation_prompt: bool | None = None  # None: true, unless continue_final_message
    continue_final_message: bool | None = None  # None: false
    tools: list[ChatTool] | None = Field(default=None, max_length=MAX_TOOLS)
    return_token_strs: bool | None = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise PydanticCustomError(
                "invalid_value", "give exactly one of prompt (a text) and messages (a chat)"
            )
        if self.prompt is not None:
            given = [f for f in _CHAT_ONLY if getattr(self, f) is not None]
            if given:
                raise PydanticCustomError(
                    "invalid_value",
                    "{fields} only apply to messages, not to a prompt",
                    {"fields": ", ".join(given)},
                )
        if self.continue_final_message and self.add_generation_prompt:
            raise PydanticCustomError(
                "invalid_value",
                "continue_final_message and add_generation_prompt cannot both be true",
            )
        unique_tool_names(self.tools)
        return self

    @property
    def special_tokens(self) -> bool:
        if self.add_special_tokens is not None:
            return self.add_special_tokens
        return self.prompt is not None

    @property
    def generation_prompt(self) -> bool:
        if self.add_generation_prompt is not None:
            return self.add_generation_prompt
        return not self.continue_final_message


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None  # sent only when asked for


class DetokenizeRequest(StrictModel):
    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str
