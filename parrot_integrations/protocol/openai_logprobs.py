"""OpenAI's log-probability shapes in answers: per token of a chat choice (`logprobs.content`)
and per token of a completion choice (`tokens`, `token_logprobs`, `top_logprobs`,
`text_offset`)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None  # the token's UTF-8 bytes (a token may split a character)


class TokenLogprob(TopLogprob):
    """One generated token, with the most likely alternatives at its position."""

    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    """A chat choice's `logprobs` (and a stream chunk's: the tokens of that chunk)."""

    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class CompletionLogprobs(BaseModel):
    """A completion choice's `logprobs`: parallel lists, one entry per token."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)  # None: an echoed first token
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int] = Field(default_factory=list)
