"""Incremental detokenization on the default model's real tokenizer: streamed text equals a
whole decode, partial characters and possible stop-string starts are held back, stop strings
that span tokens are found."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from parrot_server.engine.detokenizer import Detokenizer
from parrot_server.engine.model import default_model_path
from parrot_server.engine.model.loader import gguf_cache_dir
from parrot_server.engine.tokenizer import load_hf_tokenizer

TEXT = "Héllo 世界! <|im_end|> a parrot 🦜🦜 says: END of line. Ünïcödé ok"


@pytest.fixture(scope="module")
def tok():
    return load_hf_tokenizer(gguf_cache_dir(default_model_path()))


def _stream(detok: Detokenizer, ids: list[int]) -> tuple[list[str], str | None]:
    pieces = []
    for token in ids:
        new, stop = detok.step(token)
        pieces.append(new)
        if stop is not None:
            return pieces + [detok.flush()], stop
    return pieces + [detok.flush()], None


@pytest.mark.parametrize("skip_special", [True, False])
def test_streamed_text_equals_a_whole_decode(tok, skip_special):
    ids = tok.encode(TEXT)
    pieces, stop = _stream(Detokenizer(tok, (), skip_special), ids)
    assert stop is None
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=skip_special)
    assert not any("\ufffd" in p for p in pieces)  # a split emoji is never released half-done
    assert sum(1 for p in pieces if p) > 10  # released as it goes, not all at the end


def test_a_stop_string_spanning_tokens_ends_the_text_before_it(tok):
    ids = tok.encode(TEXT)
    pieces, stop = _stream(Detokenizer(tok, ("END of",)), ids)
    assert stop == "END of"
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True).split("END of")[0]


def test_a_possible_stop_start_is_held_back_until_it_cannot_match(tok):
    detok = Detokenizer(tok, ("says: STOP",))
    released = ""
    for token in tok.encode("a parrot says: "):
        released += detok.step(token)[0]
    assert released == "a parrot "  # "says: " could still become the stop string
    for token in tok.encode("hello"):
        released += detok.step(token)[0]
    assert released + detok.flush() == "a parrot says: hello"


def test_a_tokenizer_without_a_tokenizers_backend_decodes_the_whole_output(tok):
    plain = SimpleNamespace(decode=tok.decode)  # e.g. a slow (pure Python) tokenizer
    ids = tok.encode(TEXT)
    pieces, stop = _stream(Detokenizer(plain, ("END of",)), ids)
    assert stop == "END of"
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True).split("END of")[0]
