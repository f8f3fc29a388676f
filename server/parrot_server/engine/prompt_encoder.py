"""Prompt text -> token ids, off the threads that serve everyone else.

Tokenizing takes seconds for megabytes of text. Done on the engine's worker thread it stalls every
running generation, and on the event loop every request; so it runs on a thread of its own, through
`encode_batch`, which releases the GIL (`encode` holds it throughout). The tokenizer there is a
private copy: a Rust tokenizer used from two threads at once can fail ("Already borrowed").

A text whose length alone proves it cannot fit the window is refused before any of that
(`token_bound`), so the work a request can cause is bounded by the context window, not by the
size of its body."""

from __future__ import annotations

import asyncio
import copy
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import PromptTooLongError
from .token_bound import TokenBound, token_bound


class PromptEncoder:
    def __init__(self, tokenizer: Any) -> None:
        """`tokenizer`: a transformers tokenizer (a fast one is encoded through its backend),
        or a `tokenizers.Tokenizer`; copied, never used from here on."""
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if hasattr(backend, "encode_batch"):
            from tokenizers import Tokenizer

            own = Tokenizer.from_str(backend.to_str())
            own.no_truncation()  # as transformers encodes: whole, unpadded
            own.no_padding()
            self._encode = functools.partial(_encode_released, own)
        else:
            self._encode = functools.partial(_encode_plain, copy.deepcopy(tokenizer))
        self.bound: TokenBound | None = token_bound(tokenizer)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="parrot-tokenize")

    def check_length(self, text: str, max_tokens: int) -> None:
        """Raise `PromptTooLongError` if `text` surely has more than `max_tokens` tokens."""
        if self.bound is not None and self.bound.too_long(text, max_tokens):
            raise PromptTooLongError(
                f"the prompt of {len(text)} characters has more than the {max_tokens} tokens of "
                f"the context window (a token of this model covers at most "
                f"{self.bound.chars_per_token} characters)"
            )

    async def encode(self, text: str, max_tokens: int) -> list[int]:
        """`text`'s ids as the engine tokenizes a text prompt (no special tokens added);
        `PromptTooLongError` at once when it cannot fit `max_tokens`."""
        self.check_length(text, max_tokens)
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._encode, text)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


def _encode_released(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode_batch([text], add_special_tokens=False)[0].ids


def _encode_plain(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)
