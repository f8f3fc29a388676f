"""OpenAI's log-probability shapes: chat's per-token entries (`choices[].logprobs.content`)
and the legacy completions object (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`).

Parrot's log-probabilities are of the distribution after the logit processors (a grammar's
mask, penalties, `logit_bias`, `min_tokens`) and before temperature, top-k, top-p and min-p,
as vLLM reports them by default: at temperature 0 the chosen token is the most likely one."""

from __future__ import annotations

from pydantic import BaseModel, Field

MAX_CHAT_TOP_LOGPROBS = 20  # chat's `top_logprobs`
MAX_COMPLETION_LOGPROBS = 5  # completions' `logprobs`


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None  # the token's UTF-8 bytes (a token may hold part of a char)


class ChatCompletionTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[ChatCompletionTokenLogprob] | None = None
    refusal: list[ChatCompletionTokenLogprob] | None = None


class CompletionLogprobs(BaseModel):
    """The legacy shape; streamed, each chunk carries its own tokens' entries."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int] = Field(default_factory=list)
