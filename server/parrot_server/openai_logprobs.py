"""The engine's per-token log-probabilities in OpenAI's shapes (chat's entries, the legacy
completions object), with each token's text and UTF-8 bytes.

A token's bytes come from its vocabulary entry: byte-level BPE entries (GPT-2's alphabet, the
default model's) spell bytes as printable characters; SentencePiece entries mark a space with
"▁" and hold raw bytes as `<0xNN>`. Its text is those bytes decoded (a token holding part of a
character shows the replacement character; `bytes` has the truth)."""

from __future__ import annotations

import functools
import re

from parrot_integrations.protocol.openai_logprobs import (
    ChatCompletionTokenLogprob,
    ChoiceLogprobs,
    CompletionLogprobs,
    TopLogprob,
)

from .core.engine_client import EngineClient
from .engine.request import TokenLogprob


@functools.cache
def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's character for each byte, inverted: printable Latin-1 bytes stand for
    themselves, the others take the code points from 256 up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = dict.fromkeys(printable)
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c if c is not None else b): b for b, c in chars.items()}


_RAW_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_bytes(piece: str) -> bytes:
    """A vocabulary entry's bytes."""
    raw = _RAW_BYTE.fullmatch(piece)
    if raw:
        return bytes([int(raw.group(1), 16)])
    alphabet = _byte_level_alphabet()
    if all(ch in alphabet for ch in piece):
        return bytes(alphabet[ch] for ch in piece)
    return piece.replace("\u2581", " ").encode()


class TokenTexts:
    """Token ids -> bytes through the engine's vocabulary, remembered across calls."""

    def __init__(self, engine: EngineClient) -> None:
        self.engine = engine
        self.known: dict[int, bytes] = {}

    async def load(self, entries: list[TokenLogprob]) -> None:
        ids = {e.token_id for e in entries} | {t for e in entries for t, _ in e.top}
        missing = sorted(ids - self.known.keys())
        if missing:
            pieces = await self.engine.token_strs(missing)
            self.known.update(zip(missing, map(token_bytes, pieces), strict=True))

    def text(self, token: int) -> str:
        return self.known[token].decode("utf-8", errors="replace")

    def top(self, token: int, logprob: float) -> TopLogprob:
        return TopLogprob(token=self.text(token), logprob=logprob, bytes=list(self.known[token]))


async def chat_logprobs(entries: list[TokenLogprob], texts: TokenTexts) -> ChoiceLogprobs:
    await texts.load(entries)
    return ChoiceLogprobs(
        content=[
            ChatCompletionTokenLogprob(
                **texts.top(e.token_id, e.logprob).model_dump(),
                top_logprobs=[texts.top(t, lp) for t, lp in e.top],
            )
            for e in entries
        ]
    )


async def completion_logprobs(
    entries: list[TokenLogprob], texts: TokenTexts, offset: int
) -> CompletionLogprobs:
    """The legacy shape; `offset`: where the first token's text starts in the choice's text."""
    await texts.load(entries)
    tokens = [texts.text(e.token_id) for e in entries]
    starts = []
    for token in tokens:
        starts.append(offset)
        offset += len(token)
    return CompletionLogprobs(
        tokens=tokens,
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=[{texts.text(t): lp for t, lp in e.top} for e in entries],
        text_offset=starts,
    )
