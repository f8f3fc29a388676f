"""Incremental detokenization with stop strings.

Each step decodes only the new token (the `tokenizers` library's `DecodeStream`, which holds back
a partial UTF-8 character itself), so a step costs the same at the 1st and the 4000th token.
Tokenizers without a `tokenizers` backend decode the whole output each step. Text is released
only once it cannot change: a trailing partial character (decoded as U+FFFD) and a tail that
could still grow into a stop string are held back.
"""

from __future__ import annotations

from typing import Any

from tokenizers.decoders import DecodeStream


class Detokenizer:
    def __init__(
        self, tokenizer: Any, stop: tuple[str, ...] = (), skip_special_tokens: bool = True
    ) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.skip_special_tokens = skip_special_tokens
        # A transformers fast tokenizer exposes its `tokenizers.Tokenizer`; others have none.
        self.backend = getattr(tokenizer, "backend_tokenizer", None)
        self.stream = DecodeStream(skip_special_tokens=skip_special_tokens)
        self.ids: list[int] = []  # only kept without a backend
        self.decoded = ""  # everything decoded so far
        self.text = ""  # all text decoded so far (up to a stop string, once matched)
        self.sent = 0  # chars of `text` already released

    def _decode(self, token: int) -> str:
        if self.backend is not None:
            self.decoded += self.stream.step(self.backend, token) or ""
        else:
            self.ids.append(token)
            self.decoded = self.tokenizer.decode(
                self.ids, skip_special_tokens=self.skip_special_tokens
            )
        return self.decoded

    def step(self, token: int) -> tuple[str, str | None]:
        """Add one output token; returns (new releasable text, matched stop string)."""
        text = self._decode(token)
        for s in self.stop:
            # Search only where a new match can start (old text was already checked).
            i = text.find(s, max(0, self.sent - len(s) + 1))
            if i != -1:
                self.text = text[:i]
                return self.flush(), s
        self.text = text
        end = len(text)
        if text.endswith("\ufffd"):
            end -= 1
        for s in self.stop:
            for k in range(min(len(s) - 1, end), 0, -1):
                if text.endswith(s[:k], 0, end):
                    end -= k
                    break
        end = max(end, self.sent)
        new, self.sent = text[self.sent : end], end
        return new, None

    def flush(self) -> str:
        """Everything not yet released (the request is finishing)."""
        new, self.sent = self.text[self.sent :], len(self.text)
        return new
