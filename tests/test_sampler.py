"""Sampling candidates (top-k, top-p) against a plain full sort of the vocabulary, including a
nucleus wider than the partial sort's first guess."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from parrot_server.engine.sampler import TOP_P_CANDIDATES, candidates, sample, sample_row
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
        assert sample(logits[None], [params], [rng]) == [1]
    # Past the greedy threshold an overflow still falls back to the best token.
    huge = torch.tensor([1e38, 3e38, -1e38])
    assert sample_row(huge, SamplingParams(temperature=0.5, max_new_tokens=1), rng) == 1
