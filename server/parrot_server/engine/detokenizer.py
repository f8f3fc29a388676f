"""Incremental detokenization with stop strings.

Text is released only once it cannot change: a trailing partial UTF-8 character (decoded as
U+FFFD) and a tail that could still grow into a stop string are held back.
"""

from __future__ import annotations

from typing import Any


class Detokenizer:
    def __init__(
        self, tokenizer: Any, stop: tuple[str, ...] = (), skip_special_tokens: bool = True
    ) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.skip_special_tokens = skip_special_tokens
        self.text = ""  # all text decoded so far (up to a stop string, once matched)
        self.sent = 0  # chars of `text` already released

    def step(self, output_ids: list[int]) -> tuple[str, str | None]:
        """Decode the whole output so far; returns (new releasable text, matched stop string)."""
        text = self.tokenizer.decode(output_ids, skip_special_tokens=self.skip_special_tokens)
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
                if text[:end].endswith(s[:k]):
                    end -= k
                    break
        end = max(end, self.sent)
        new, self.sent = text[self.sent : end], end
        return new, None

    def flush(self) -> str:
        """Everything not yet released (the request is finishing)."""
        new, self.sent = self.text[self.sent :], len(self.text)
        return new
