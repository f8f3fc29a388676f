"""parrot_kernels.paged_attention: compiled decode attention over a paged KV pool (slots in any
order, padded rows, GQA) against the naive fp64 reference, and its input checks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from parrot_kernels import cpu_ops, reference_attention
from parrot_kernels.paged_attention import paged_decode_attention

TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def ext():
    if not cpu_ops.load():
        pytest.skip(f"extension unavailable: {cpu_ops.unavailable_reason()}")


@settings(max_examples=40, deadline=None)
@given(
    lens=st.lists(st.integers(1, 70), min_size=1, max_size=6),
    hkv=st.sampled_from([1, 3]),
    group=st.sampled_from([1, 3]),
    d=st.sampled_from([8, 64, 72]),
    seed=st.integers(0, 2**16),
)
def test_matches_the_reference_for_scattered_slots(lens, hkv, group, d, seed):
    g = torch.Generator().manual_seed(seed)
    pool_size = 256
    k_pool = torch.randn(pool_size, hkv, d, generator=g) * 3
    v_pool = torch.randn(pool_size, hkv, d, generator=g)
    q = torch.randn(len(lens), hkv * group, d, generator=g)
    width = max(lens)
    slots = torch.zeros(len(lens), width, dtype=torch.long)  # padding: slot 0, never read
    for i, n in enumerate(lens):
        slots[i, :n] = torch.randperm(pool_size, generator=g)[:n]
    empty = k_pool[:0]
    want = reference_attention(
        [q[i : i + 1] for i in range(len(lens))],
        empty,
        empty,
        [k_pool[slots[i, :n]] for i, n in enumerate(lens)],
        [v_pool[slots[i, :n]] for i, n in enumerate(lens)],
    )
    module = cpu_ops.module()
    try:
        for path in ("scalar", module.set_isa("best")):  # the fallback and what this CPU runs
            assert module.set_isa(path) == path
            got = paged_decode_attention(q, k_pool, v_pool, slots, torch.tensor(lens))
            assert (got.double() - torch.cat(want)).abs().max().item() <= TOL, path
    finally:
        module.set_isa("best")


def test_other_dtypes_are_left_to_the_caller():
    q, pool = torch.randn(1, 3, 8, dtype=torch.bfloat16), torch.randn(4, 3, 8)
    slots, lengths = torch.zeros(1, 1, dtype=torch.long), torch.ones(1, dtype=torch.long)
    assert paged_decode_attention(q, pool, pool, slots, lengths) is None


def test_bad_slots_and_lengths_are_value_errors():
    q, pool = torch.randn(2, 3, 8), torch.randn(4, 3, 8)
    slots = torch.tensor([[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="outside the pool"):
        paged_decode_attention(q, pool, pool, torch.tensor([[0, 9], [2, 3]]), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="lengths must be in"):
        paged_decode_attention(q, pool, pool, slots, torch.tensor([3, 1]))
    with pytest.raises(ValueError, match="heads divide"):
        paged_decode_attention(torch.randn(2, 4, 8), pool, pool, slots, torch.tensor([2, 2]))
