"""Prompt text is tokenized off the engine's thread, and text too long for the context window is
refused from its length before tokenizing: the real model's tokenizer and engine, in process."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from parrot_server.engine.async_engine import AsyncEngine
from parrot_server.engine.errors import PromptTooLongError
from parrot_server.engine.sampling_params import SamplingParams
from parrot_server.engine.token_bound import token_bound
from parrot_server.engine.tokenizer_thread import TokenizerThread


@pytest.fixture(scope="module")
def tokenizer(loaded_model):
    return loaded_model.tokenizer


def _adversarial_texts(tokenizer) -> list[str]:
    """Texts made of the tokens that cover the most characters, of the characters the tokenizer
    skips, and of anything at all."""
    vocab = tokenizer.get_vocab()
    longest = sorted(vocab, key=len, reverse=True)[:20]
    texts = [tokenizer.decode([vocab[t]]) * 50 for t in longest]
    texts += [t * 50 for t in tokenizer.all_special_tokens]
    texts += [str(t) * 50 for t in tokenizer.added_tokens_decoder.values()]
    rng = random.Random(0)
    for alphabet in (range(0, 128), range(0, 0x3000), range(0x1F300, 0x1F700)):
        chars = [chr(c) for c in alphabet if not 0xD800 <= c <= 0xDFFF]
        texts.append("".join(rng.choice(chars) for _ in range(5000)))
    texts.append("\x04" * 1000 + " " * 3000 + "=" * 3000 + "\n" * 3000)
    return texts


def test_the_bound_never_counts_more_tokens_than_a_text_has(tokenizer):
    bound = token_bound(tokenizer)
    assert bound is not None and bound.chars_per_token >= 16
    for text in _adversarial_texts(tokenizer):
        n = len(tokenizer.encode(text, add_special_tokens=False))
        assert bound.min_tokens(text) <= n, (text[:40], n, bound)
    # Characters the byte-level vocabulary has no token for vanish: counted out, not in.
    if bound.skipped:
        text = bound.skipped * 10_000 + "hello"
        assert len(tokenizer.encode(text, add_special_tokens=False)) == 1
        assert not bound.too_long(text, 1)


def test_tokenizers_that_can_make_text_vanish_get_no_bound():
    def bpe(**kwargs) -> Tokenizer:
        return Tokenizer(models.BPE(vocab={"a": 0, "[UNK]": 1}, merges=[], **kwargs))

    strip = bpe(unk_token="[UNK]")
    strip.normalizer = normalizers.Strip()  # a megabyte of spaces is nothing
    words = Tokenizer(models.WordPiece({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()  # one long word is one [UNK]
    fused = bpe(unk_token="[UNK]", fuse_unk=True)
    skipping = bpe()  # no unknown token: unknown characters are skipped
    for tok in (strip, words, fused, skipping):
        assert token_bound(tok) is None
    composed = bpe(unk_token="[UNK]")
    composed.normalizer = normalizers.NFC()  # up to 4 characters compose into one
    assert token_bound(composed).chars_per_token == 4 * len("[UNK]")


async def test_encoder_matches_the_engine_and_refuses_by_length(tokenizer):
    encoder = TokenizerThread(tokenizer)
    try:
        for text in ["hi <|im_start|>user\nyo<|im_end|>", "日本語 😀", " " * 300, ""]:
            assert await encoder.encode(text, 2048) == tokenizer.encode(
                text, add_special_tokens=False
            )
        huge = "word " * 2_000_000
        with pytest.raises(PromptTooLongError, match="10000000 characters") as err:
            await encoder.encode(huge, 2048)
        # Said from the length alone (the ids would say "has N tokens").
        assert "at most" in str(err.value) and "tokens of the context window" in str(err.value)
        # Short enough for the bound: tokenized, even with more tokens than asked (the engine
        # says how many).
        assert len(await encoder.encode("word " * 1000, 100)) >= 1000
    finally:
        encoder.close()


@pytest.mark.slow
async def test_the_engine_keeps_stepping_while_a_long_prompt_is_tokenized(make_engine):
    """A prompt that takes long to tokenize (as long as the bound lets through, then too many
    tokens) must not stop other requests' generation: tokens keep coming while it is measured."""
    engine = AsyncEngine(lambda: make_engine(kv_pool_tokens=4096))
    try:
        limit = engine.engine.max_context_len
        text = "word " * ((limit * token_bound(engine.engine.tokenizer).chars_per_token - 1) // 5)
        sampling = SamplingParams(max_new_tokens=1000, temperature=0, ignore_eos=True)
        stream = await engine.submit("Count to one thousand:", sampling)
        times: list[float] = []

        async def read() -> None:
            async for out in stream:
                times.extend(time.monotonic() for _ in out.new_token_ids)

        reader = asyncio.ensure_future(read())
        while len(times) < 2:  # decoding
            await asyncio.sleep(0.01)
        start = time.monotonic()
        with pytest.raises(PromptTooLongError, match="tokens"):
            await engine.submit(text, SamplingParams(max_new_tokens=1))
        end = time.monotonic()
        during = [t for t in times if start < t < end]
        assert not reader.done(), "the generation ended before the long prompt was measured"
        # Tokenized on the engine's thread, the prompt would let at most the step in flight
        # finish: one token.
        assert len(during) >= 3, (len(during), end - start)
        await stream.aclose()
        reader.cancel()
    finally:
        await engine.shutdown()
