"""`/tokenize` and `/detokenize`: texts and chats as the served model tokenizes them.

A chat is rendered by `OpenAIService.chat_prompt`, the code `/v1/chat/completions` renders with,
so a count is the `usage.prompt_tokens` that route reports for the same messages. Tokenizing
runs on the engine client's tokenizer thread, off the event loop and the engine's step.
"""

from __future__ import annotations

from parrot_integrations.protocol.openai import ChatCompletionRequest
from parrot_integrations.protocol.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)

from .engine.errors import InvalidRequestError
from .openai_service import OpenAIService


class TokenizeService:
    def __init__(self, openai: OpenAIService, max_chars: int) -> None:
        self.openai = openai
        self.engine = openai.engine
        self.max_chars = max_chars  # longest text tokenized, most ids detokenized

    async def tokenize(self, req: TokenizeRequest) -> TokenizeResponse:
        self.openai.models.resolve(req.model)
        if req.prompt is not None:
            text = req.prompt
            self._bound(len(text), "characters in prompt")
        else:
            chat = ChatCompletionRequest(messages=req.messages, tools=req.tools)
            text = self.openai.chat_prompt(
                chat,
                add_generation_prompt=req.generation_prompt,
                continue_final_message=bool(req.continue_final_message),
            )
            self._bound(len(text), "characters in the rendered chat")
        # Any length up to the text bound: counting a text longer than the window is legitimate.
        ids = await self.engine.encode(
            text, add_special_tokens=req.special_tokens, fit_window=False
        )
        strs = await self.engine.token_strs(ids) if req.return_token_strs else None
        return TokenizeResponse(
            count=len(ids),
            max_model_len=self.engine.info.max_context_len,
            tokens=ids,
            token_strs=strs,
        )

    async def detokenize(self, req: DetokenizeRequest) -> DetokenizeResponse:
        self.openai.models.resolve(req.model)
        self._bound(len(req.tokens), "tokens")
        return DetokenizeResponse(prompt=await self.engine.decode(req.tokens))

    def _bound(self, n: int, what: str) -> None:
        if n > self.max_chars:
            raise InvalidRequestError(
                f"{n} {what}: at most {self.max_chars} (the server's --max-value-chars)"
            )
