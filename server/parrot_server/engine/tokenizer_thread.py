"""Text <-> token ids, off the threads that serve everyone else.

Tokenizing takes seconds for megabytes of text. Done on the engine's worker thread it stalls every
running generation, and on the event loop every request; so it runs on a thread of its own, through
`encode_batch`, which releases the GIL (`encode` holds it throughout). The tokenizer there is a
private copy: a Rust tokenizer used from two threads at once can fail ("Already borrowed").

A prompt whose length alone proves it cannot fit the window is refused before any of that
(`token_bound`), so the work a request can cause is bounded by the context window, not by the
size of its body. Pure Python (no torch)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .errors import InvalidRequestError, PromptTooLongError
from .token_bound import TokenBound, token_bound

T = TypeVar("T")


class TokenizerThread:
    def __init__(self, tokenizer: Any) -> None:
        """`tokenizer`: a transformers tokenizer (a fast one is used through its backend), or a
        `tokenizers.Tokenizer`; copied (call this while no other thread uses it), never used
        from here on."""
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if hasattr(backend, "encode_batch"):
            from tokenizers import Tokenizer

            own = Tokenizer.from_str(backend.to_str())
            own.no_truncation()  # as transformers encodes: whole, unpadded
            own.no_padding()
            self._codec: _Codec = _FastCodec(own)
        else:
            self._codec = _SlowCodec(copy.deepcopy(tokenizer))
        self.vocab_size = self._codec.vocab_size()  # added tokens included
        self.bound: TokenBound | None = token_bound(tokenizer)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="parrot-tokenize")
        self.texts_encoded = 0  # texts tokenized so far: each prompt should be counted once

    def check_length(self, text: str, max_tokens: int) -> None:
        """Raise `PromptTooLongError` if `text` surely has more than `max_tokens` tokens."""
        if self.bound is not None and self.bound.too_long(text, max_tokens):
            raise PromptTooLongError(
                f"the prompt of {len(text)} characters has more than the {max_tokens} tokens of "
                f"the context window (a token of this model covers at most "
                f"{self.bound.chars_per_token} characters)"
            )

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def encode(
        self, text: str, max_tokens: int | None = None, add_special_tokens: bool = False
    ) -> list[int]:
        """`text`'s ids as the engine tokenizes a text prompt (no special tokens added unless
        asked); with `max_tokens`, `PromptTooLongError` at once when it cannot fit."""
        (ids,) = await self.encode_many([text], max_tokens, add_special_tokens)
        if isinstance(ids, Exception):
            raise ids
        return ids

    async def encode_many(
        self, texts: list[str], max_tokens: int | None = None, add_special_tokens: bool = False
    ) -> list[list[int] | PromptTooLongError]:
        """Each text's ids as `encode` makes them, in one pass on the thread; a text that
        cannot fit gets its error in its place (the others are still tokenized)."""
        results: list[list[int] | PromptTooLongError] = []
        todo: list[str] = []
        for text in texts:
            try:
                if max_tokens is not None:
                    self.check_length(text, max_tokens)
            except PromptTooLongError as exc:
                results.append(exc)
            else:
                results.append([])
                todo.append(text)
        if todo:
            self.texts_encoded += len(todo)
            done = iter(await self._run(lambda: self._codec.encode_batch(todo, add_special_tokens)))
            results = [r if isinstance(r, Exception) else next(done) for r in results]
        return results

    async def decode(self, ids: list[int]) -> str:
        """The text of `ids`, special tokens included and spaces untouched, so that the text
        of a text's ids is that text."""
        self._check(ids)
        return await self._run(lambda: self._codec.decode(ids))

    async def token_strs(self, ids: list[int]) -> list[str]:
        """The vocabulary entry of each id (byte-level pieces as the vocabulary spells them)."""
        self._check(ids)
        return await self._run(lambda: self._codec.token_strs(ids))

    def _check(self, ids: list[int]) -> None:
        # The tokenizer would skip an unknown id silently, or fail on a negative one.
        unknown = [i for i in ids if not 0 <= i < self.vocab_size]
        if unknown:
            raise InvalidRequestError(
                f"unknown token ids {unknown[:8]}: the vocabulary's ids are 0 to "
                f"{self.vocab_size - 1}"
            )

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


class _Codec:
    """One tokenizer's four operations, run on the thread only."""

    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode_batch(self, texts: list[str], special: bool) -> list[list[int]]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def token_strs(self, ids: list[int]) -> list[str]:
        raise NotImplementedError


class _FastCodec(_Codec):
    """A `tokenizers.Tokenizer`: `encode_batch` releases the GIL."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer

    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts: list[str], special: bool) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=special)]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def token_strs(self, ids: list[int]) -> list[str]:
        return [self.tok.id_to_token(i) for i in ids]


class _SlowCodec(_Codec):
    """A transformers tokenizer without a Rust backend."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer

    def vocab_size(self) -> int:
        return len(self.tok)

    def encode_batch(self, texts: list[str], special: bool) -> list[list[int]]:
        return [self.tok.encode(t, add_special_tokens=special) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def token_strs(self, ids: list[int]) -> list[str]:
        return self.tok.convert_ids_to_tokens(ids)
