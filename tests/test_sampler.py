"""Sampling candidates (top-k, top-p) against a plain full sort of the vocabulary, including a
nucleus wider than the partial sort's first guess; logit processors and log-probabilities
against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from parrot_server.engine.errors import InvalidRequestError
from parrot_server.engine.sampler import (
    TOP_P_CANDIDATES,
    SampleRow,
    apply_logit_bias,
    apply_penalties,
    candidates,
    mask_tokens,
    min_p_filter,
    position_generator,
    process_row,
    sample,
    sample_batch,
    sample_row,
    token_logprobs,
)
from parrot_server.engine.sampling_params import SamplingParams

VOCAB = 5000


def _reference(logits: torch.Tensor, top_k: int, top_p: float) -> set[int]:
    values, ids = torch.sort(logits, descending=True)
    if 0 < top_k < len(logits):
        values, ids = values[:top_k], ids[:top_k]
    probs = torch.softmax(values.double(), dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs
    keep = max(1, int((before < top_p).sum())) if top_p < 1 else len(ids)
    return set(ids[:keep].tolist())


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    spread=st.floats(0.01, 8.0),
    top_k=st.sampled_from([-1, 1, 5, 50, 400]),
    top_p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 0.99, 1.0]),
)
def test_candidates_equal_a_full_sort(seed, spread, top_k, top_p):
    logits = torch.randn(VOCAB, generator=torch.Generator().manual_seed(seed)) * spread
    values, ids = candidates(logits, top_k, top_p)
    assert set(ids.tolist()) == _reference(logits, top_k, top_p)
    assert torch.equal(values, logits[ids])
    if top_k > 0 or top_p < 1:
        assert (values[:-1] >= values[1:]).all()  # most likely first


def test_a_flat_distribution_takes_the_full_sort():
    logits = torch.zeros(VOCAB)
    values, ids = candidates(logits, -1, 0.9)
    assert len(ids) > TOP_P_CANDIDATES  # wider than the first guess
    assert len(ids) == pytest.approx(0.9 * VOCAB, abs=2)


def test_no_filter_keeps_every_token():
    logits = torch.randn(VOCAB)
    values, ids = candidates(logits, -1, 1.0)
    assert torch.equal(ids, torch.arange(VOCAB)) and torch.equal(values, logits)


def test_a_tiny_temperature_samples_the_best_token():
    """Logits divided by 1e-300 overflow to inf; the sampler answers as greedy, never with NaN
    probabilities (which failed the whole engine step, every request in it)."""
    logits = torch.tensor([1.0, 3.0, 2.0, -5.0])
    rng = torch.Generator().manual_seed(0)
    for t in (1e-300, 1e-30, 1e-6):
        params = SamplingParams(temperature=t, max_new_tokens=1)
        assert params.greedy
        assert sample(logits[None], [SampleRow(params, [], [], 0)]) == [1]
    # Past the greedy threshold an overflow still falls back to the best token.
    huge = torch.tensor([1e38, 3e38, -1e38])
    assert sample_row(huge, SamplingParams(temperature=0.5, max_new_tokens=1), rng) == 1


# -- logit processors, log-probabilities ------------------------------------------------------


def test_frequency_and_presence_penalties_by_hand():
    logits = torch.tensor([1.0, 2.0, 3.0, -1.0])
    out = apply_penalties(logits, [0, 1], [2, 2, 3], frequency=0.5, presence=0.25)
    # Token 2 occurs twice: 3 - 2*0.5 - 0.25; token 3 once: -1 - 0.5 - 0.25; the prompt's
    # tokens (0, 1) are not the output's, so OpenAI's penalties leave them.
    assert out.tolist() == [1.0, 2.0, 1.75, -1.75]
    assert logits.tolist() == [1.0, 2.0, 3.0, -1.0]  # a new tensor


def test_repetition_penalty_by_hand():
    logits = torch.tensor([2.0, -2.0, 4.0, 1.0])
    out = apply_penalties(logits, [0, 1], [1], repetition=2.0)
    # Seen (prompt or output): 0 (positive: halved), 1 (negative: doubled); unseen kept.
    assert out.tolist() == [1.0, -4.0, 4.0, 1.0]


def test_logit_bias_and_masks_by_hand():
    logits = torch.tensor([0.0, 1.0, 2.0])
    assert apply_logit_bias(logits, [(0, 100.0), (2, -1.5)]).tolist() == [100.0, 1.0, 0.5]
    masked = mask_tokens(logits, [2])
    assert masked.tolist() == [0.0, 1.0, float("-inf")]
    only = torch.tensor([float("-inf"), 5.0])
    assert torch.equal(mask_tokens(only, [1]), only)  # nothing left: unchanged


def test_min_p_zeroes_the_unlikely():
    probs = torch.tensor([0.5, 0.3, 0.1, 0.04])
    assert min_p_filter(probs, 0.2).tolist() == pytest.approx([0.5, 0.3, 0.1, 0.0])


def test_process_row_masks_end_tokens_until_min_new_tokens():
    params = SamplingParams(min_new_tokens=2, stop_token_ids=(1,), max_new_tokens=4)
    logits = torch.tensor([0.0, 9.0, 8.0, 1.0])
    held = process_row(logits, params, [3], [3], end_ids=[2])
    assert held[1] == float("-inf") and held[2] == float("-inf") and held[3] == 1.0
    assert torch.equal(process_row(logits, params, [3], [3, 0], end_ids=[2]), logits)


def test_token_logprobs_by_hand():
    logits = torch.tensor([0.0, 0.0, torch.log(torch.tensor(2.0))])  # probs 1/4, 1/4, 1/2
    entry = token_logprobs(logits, 0, top=2)
    assert entry.token_id == 0 and entry.logprob == pytest.approx(math.log(0.25))
    assert entry.top[0][0] == 2 and entry.top[0][1] == pytest.approx(math.log(0.5))
    assert len(entry.top) == 2


@pytest.mark.parametrize(
    ("params", "want"),
    [
        (SamplingParams(temperature=1.0, max_new_tokens=1), None),
        (SamplingParams(temperature=0.5, max_new_tokens=1), None),
        (SamplingParams(temperature=1.0, top_k=2, max_new_tokens=1), 2),
    ],
    ids=["t1", "t0.5", "top-k-2"],
)
def test_draws_follow_the_distribution_and_depend_on_seed_and_position_only(params, want):
    logits = torch.tensor([0.0, 1.0, 2.0, 0.5])
    probs = torch.softmax(logits / params.temperature, -1)
    if want is not None:  # the k likeliest, renormalised
        top = probs.topk(want)
        probs = torch.zeros(4).index_copy(0, top.indices, top.values / top.values.sum())
    n = 8000
    draws = [sample_row(logits, params, position_generator(5, t)) for t in range(n)]
    freq = torch.bincount(torch.tensor(draws), minlength=4).double() / n
    assert (freq - probs.double()).abs().max() <= 4 * math.sqrt(0.25 / n)  # 4 sigma at most
    assert draws[:50] == [sample_row(logits, params, position_generator(5, t)) for t in range(50)]
    assert draws[:50] != [sample_row(logits, params, position_generator(6, t)) for t in range(50)]


def test_a_rounding_of_the_logits_rarely_changes_a_draw():
    # Many near-equal logits, as a flat distribution at temperature 1 has: a change of float
    # rounding's size reorders them in top-p's sort, which must not move the draw (drafts
    # verify rows of several-row steps, whose logits differ from a one-row step's by such
    # rounding).
    base = torch.randn(4000, generator=torch.Generator().manual_seed(0)) * 0.01
    nudged = base + torch.randn(4000, generator=torch.Generator().manual_seed(1)) * 1e-5
    params = SamplingParams(temperature=1.0, top_p=0.99, max_new_tokens=1)
    same = sum(
        sample_row(base, params, position_generator(9, t))
        == sample_row(nudged, params, position_generator(9, t))
        for t in range(500)
    )
    assert same >= 495


def test_sample_batch_skips_rows_without_processors_and_scores_only_asked_rows():
    logits = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    plain = SamplingParams(temperature=0, max_new_tokens=2)
    biased = SamplingParams(
        temperature=0, max_new_tokens=2, logit_bias={0: 100}, logprobs=True, top_logprobs=3
    )
    rows = [SampleRow(plain, [1], [], 0), SampleRow(biased, [1], [], 0)]
    (t0, lp0), (t1, lp1) = sample_batch(logits, rows, end_ids=[2])
    assert (t0, lp0) == (2, None)
    assert t1 == 0 and lp1 is not None and lp1.logprob == max(v for _, v in lp1.top)
    assert logits[0].tolist() == [0.0, 1.0, 2.0]  # the plain row untouched


@pytest.mark.parametrize(
    "field, value",
    [
        ("frequency_penalty", 2.5),
        ("presence_penalty", float("nan")),
        ("repetition_penalty", 0.0),
        ("min_p", 1.5),
        ("logit_bias", {"a": 1}),
        ("logit_bias", {5: 101}),
        ("min_new_tokens", 9),
        ("top_logprobs", 21),
    ],
)
def test_bad_processor_values_name_their_field(field, value):
    with pytest.raises(InvalidRequestError, match=field):
        SamplingParams(max_new_tokens=4, **{field: value})
