"""Requests verify drafts from their own text (prompt lookup): the output is what plain decoding
gives (greedy, or sampled with the same seed), in fewer steps, and a draft's unused slots go
back to the pool."""

from __future__ import annotations

import pytest
from model_helpers import chat_ids

from parrot_server.engine.sampling_params import SamplingParams

# Prompts whose answers repeat their text (drafts are taken), and ones whose answers do not.
COPYING = [
    "Repeat this sentence exactly: The old lighthouse keeper climbed the stairs every night "
    "to light the lamp for the ships.",
    "Make this sentence clearer: the bees they dance so the other bees can know where the "
    "flowers are and how far.",
]
OTHER = ["What is the capital of France?", "Write a haiku about the sea."]


def run_alone(eng, prompts, sampling: SamplingParams):
    """Each prompt on its own (a batch of one drafts), its prompt computed afresh (a cached
    one would end in a one-row step, rounded otherwise); the outputs and the steps taken."""
    outs, steps = [], 0
    for p in prompts:
        eng.flush_cache()
        r = eng.submit(chat_ids(eng.tokenizer, p), sampling)
        while eng.has_work():
            eng.step()
            steps += 1
        outs.append((list(r.output_ids), r.finish_reason))
    return outs, steps


@pytest.fixture(scope="module")
def engines(make_engine):
    return make_engine(speculative_tokens=0), make_engine(speculative_tokens=4)


@pytest.mark.parametrize(
    ("sampling", "saved"),
    [
        (SamplingParams(max_new_tokens=40, temperature=0), 10),
        # Penalties discourage repeating: fewer drafts are right, but each row is judged with
        # the penalties of the text before it.
        (SamplingParams(max_new_tokens=40, temperature=0, repetition_penalty=1.2), 1),
        (SamplingParams(max_new_tokens=40, top_k=1, frequency_penalty=0.4, min_new_tokens=5), 1),
        # Sampled: a row's draw depends on the seed and its position only, so the same seed
        # gives the same tokens however many of them a step verified.
        (SamplingParams(max_new_tokens=40, temperature=0.7, sampling_seed=7), 5),
        (SamplingParams(max_new_tokens=40, temperature=1.0, top_p=0.9, sampling_seed=3), 2),
    ],
    ids=["greedy", "repetition-penalty", "top-k-1-penalties", "sampled", "sampled-top-p"],
)
def test_drafts_give_the_same_output_in_fewer_steps(engines, sampling, saved):
    plain, drafting = engines
    before = drafting.stats()
    expected, plain_steps = run_alone(plain, COPYING + OTHER, sampling)
    got, steps = run_alone(drafting, COPYING + OTHER, sampling)
    assert got == expected
    stats = drafting.stats()
    accepted = stats.accepted_draft_tokens_total - before.accepted_draft_tokens_total
    # Each accepted draft token used saves a step (one dropped after a stop saves none).
    assert accepted >= plain_steps - steps >= saved
    assert plain.stats().draft_tokens_total == 0


def test_logprobs_of_tokens_taken_from_a_draft(engines):
    plain, drafting = engines
    sampling = SamplingParams(max_new_tokens=30, temperature=0, logprobs=True, top_logprobs=2)
    ids = chat_ids(plain.tokenizer, COPYING[0])
    (expected,) = plain.generate([ids], sampling)
    before = drafting.stats().accepted_draft_tokens_total
    (got,) = drafting.generate([ids], sampling)
    assert drafting.stats().accepted_draft_tokens_total > before
    assert got.new_token_ids == expected.new_token_ids
    assert len(got.logprobs) == len(got.new_token_ids)
    for a, b in zip(got.logprobs, expected.logprobs, strict=True):
        assert a.token_id == b.token_id
        assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
        assert [t for t, _ in a.top] == [t for t, _ in b.top]


def test_a_stop_inside_an_accepted_draft_ends_there_and_frees_the_rest(engines):
    plain, drafting = engines
    ids = chat_ids(plain.tokenizer, COPYING[0])
    (full,) = plain.generate([ids], SamplingParams(max_new_tokens=40, temperature=0))
    assert "lamp" in full.new_text  # the answer repeats the sentence
    for sampling in (
        SamplingParams(max_new_tokens=40, temperature=0, stop=["lamp"]),
        SamplingParams(max_new_tokens=len(full.new_token_ids) - 3, temperature=0),
    ):
        (expected,) = plain.generate([ids], sampling)
        (got,) = drafting.generate([ids], sampling)
        assert (got.new_token_ids, got.new_text, got.finish_reason) == (
            expected.new_token_ids,
            expected.new_text,
            expected.finish_reason,
        )
    for eng in engines:  # every slot a draft took is back (or in the cache, flushed here)
        eng.flush_cache()
        assert eng.allocator.num_free == eng.config.kv_pool_tokens


def test_only_small_batches_of_unconstrained_requests_draft(make_engine):
    eng = make_engine(speculative_tokens=4, speculative_max_batch=2)
    ids = chat_ids(eng.tokenizer, COPYING[0])
    assert eng.submit(ids, SamplingParams(max_new_tokens=4, temperature=0.7)).lookup is not None
    constrained = SamplingParams(max_new_tokens=4, temperature=0, json_schema='{"type": "string"}')
    assert eng.submit(ids, constrained).lookup is None
    assert eng.submit(ids, prefill_only=True).lookup is None
    eng.run_until_idle()
    # Three requests decoding together (above the limit of two) never draft: all end together.
    sampling = SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True)
    reqs = [eng.submit(ids, sampling) for _ in range(3)]
    assert all(r.lookup is not None for r in reqs)
    eng.run_until_idle()
    assert eng.stats().draft_tokens_total == 0
    assert all(len(r.output_ids) == 12 for r in reqs)
