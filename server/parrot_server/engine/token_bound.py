"""A lower bound on the tokens of a text, from its length and the tokenizer's own definition
(`tokenizer.json`), so that a text too long for the context window is refused before tokenizing
it (megabytes of text take seconds).

The bound holds when the tokenizer makes text disappear only in ways we can count: a BPE model
that has a token for every byte (byte-level; characters whose bytes have no token are skipped,
and counted out), falls back to bytes, or maps each unknown character to one unknown token;
pre-tokenizers that only split or map characters one to one (none drops whitespace); normalizers
whose shrinking is bounded. Then a token covers at most as many characters as its longest
vocabulary entry or added token has (a byte-level entry has one character per byte; its text at
least one byte per character), times what normalizing may have merged into one character. Any
other tokenizer gets no bound (None), and its prompts are measured by tokenizing them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

# Unicode's longest full decompositions (fixed by its stability policy): NFC/NFKC compose at most
# this many characters into one (a text is no longer than its decomposition, which is the same
# for the text and its normal form).
_CANONICAL_DECOMPOSITION = 4
_COMPATIBILITY_DECOMPOSITION = 18

_KEEPING_SPLITS = {"Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"}


@dataclass(frozen=True)
class TokenBound:
    chars_per_token: int  # characters of input text one token covers at most
    skipped: str = ""  # characters the tokenizer drops without a token

    def min_tokens(self, text: str) -> int:
        """Tokens `text` has at least (one pass over the text per skipped character)."""
        n = len(text) - sum(text.count(c) for c in self.skipped)
        return math.ceil(n / self.chars_per_token)

    def too_long(self, text: str, max_tokens: int) -> bool:
        """Whether `text` has surely more than `max_tokens` tokens."""
        return len(text) > max_tokens * self.chars_per_token and self.min_tokens(text) > max_tokens


def token_bound(tokenizer: Any) -> TokenBound | None:
    """The bound of `tokenizer` (a `tokenizers.Tokenizer`, or a transformers fast tokenizer:
    its backend), or None when none is known."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    try:
        spec = json.loads(backend.to_str())
    except Exception:  # not a `tokenizers` tokenizer (a slow transformers class)
        return None
    shrink = _normalizer_shrink(spec.get("normalizer"))
    model = spec.get("model") or {}
    if shrink is None or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        return None
    pre = spec.get("pre_tokenizer")
    skipped = _skipped_characters(model, pre)
    if not _keeps_text(pre) or skipped is None:
        return None
    longest = max((len(t) for t in model["vocab"]), default=1)
    added = max((len(t.get("content", "")) for t in spec.get("added_tokens") or []), default=1)
    return TokenBound(shrink * max(longest, added, 1), skipped)


def _normalizer_shrink(spec: dict | None) -> int | None:
    """How many input characters normalizing may turn into one (None: no bound)."""
    if spec is None:
        return 1
    kind = spec.get("type")
    if kind == "Sequence":
        factor = 1
        for part in spec.get("normalizers", []):
            f = _normalizer_shrink(part)
            if f is None:
                return None
            factor *= f
        return factor
    if kind in ("NFD", "NFKD", "Lowercase", "Prepend"):
        return 1  # each character becomes one or more
    if kind == "NFC":
        return _CANONICAL_DECOMPOSITION
    if kind == "NFKC":
        return _COMPATIBILITY_DECOMPOSITION
    if kind == "Replace":
        pattern, content = spec.get("pattern") or {}, spec.get("content", "")
        if "String" in pattern and content:
            return max(1, math.ceil(len(pattern["String"]) / len(content)))
    return None  # Strip, StripAccents, BertNormalizer, Precompiled, regex replaces: unbounded


def _keeps_text(spec: dict | None) -> bool:
    """Whether the pre-tokenizer keeps every character (it may split, map one to one, add)."""
    if spec is None:
        return True
    kind = spec.get("type")
    if kind == "Sequence":
        return all(_keeps_text(p) for p in spec.get("pretokenizers", []))
    if kind in ("ByteLevel", "Metaspace", "Digits", "UnicodeScripts"):
        return True
    if kind in ("Split", "Punctuation"):
        return spec.get("behavior", "Isolated") in _KEEPING_SPLITS
    return False  # Whitespace, WhitespaceSplit, BertPreTokenizer, CharDelimiterSplit drop text


def _skipped_characters(model: dict, pre: dict | None) -> str | None:
    """The characters that yield no token ("" when every one yields one), or None when text may
    vanish in ways not counted."""
    if model.get("byte_fallback"):
        return ""
    if model.get("unk_token") is not None and not model.get("fuse_unk"):
        return ""
    if not _byte_level(pre):
        return None  # characters outside the vocabulary are skipped, and they are countless
    missing = {b for b, c in enumerate(_byte_chars()) if c not in model["vocab"]}
    # A character vanishes when none of its UTF-8 bytes has a token: an ASCII one whose byte is
    # missing (counted out); a longer one only if its lead byte and a continuation byte can both
    # be missing (then: no bound).
    if missing & set(range(0xC2, 0xF5)) and missing & set(range(0x80, 0xC0)):
        return None
    return "".join(chr(b) for b in sorted(missing) if b < 0x80)


def _byte_level(spec: dict | None) -> bool:
    if spec is None:
        return False
    if spec.get("type") == "Sequence":
        return any(_byte_level(p) for p in spec.get("pretokenizers", []))
    return spec.get("type") == "ByteLevel"


def _byte_chars() -> list[str]:
    """The character byte-level BPE writes each byte value as (GPT-2's `bytes_to_unicode`):
    printable Latin-1 as itself, the others from U+0100 on, in order."""
    printable = {*range(33, 127), *range(161, 173), *range(174, 256)}
    others = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(others)) for b in range(256)]
