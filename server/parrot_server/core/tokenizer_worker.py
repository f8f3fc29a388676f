"""`TokenizerWorker`: a private copy of a tokenizer, used on one thread of its own.

Tokenizing or detokenizing a long text takes a while: on this thread it neither blocks the event
loop nor waits behind (or delays) an engine step. A copy, because an HF Rust tokenizer used from
two threads at once can fail ("Already borrowed"); this one is only ever used on the worker's
thread. Pure Python (no torch).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..engine.errors import InvalidRequestError

T = TypeVar("T")


class TokenizerWorker:
    def __init__(self, tokenizer: Any) -> None:
        """Copies `tokenizer`: call it while no other thread uses that tokenizer."""
        self._tokenizer = copy.deepcopy(tokenizer)
        self.vocab_size = len(self._tokenizer)  # added tokens included
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="parrot-tokenizer")

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return await self._run(
            lambda: self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        )

    async def decode(self, ids: list[int]) -> str:
        """The text of `ids`, special tokens included and spaces untouched, so that the text
        of a text's ids is that text."""
        self._check(ids)
        return await self._run(
            lambda: self._tokenizer.decode(
                ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
        )

    async def token_strs(self, ids: list[int]) -> list[str]:
        """The vocabulary entry of each id (byte-level pieces as the vocabulary spells them)."""
        self._check(ids)
        return await self._run(lambda: self._tokenizer.convert_ids_to_tokens(ids))

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
