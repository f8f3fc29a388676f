"""PrefixIndex: chained block hashes, LRU capacity, speed (pure Python, no server)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parrot_server.core.prefix_index import PrefixIndex


def seq(start: int, n: int) -> list[int]:
    return list(range(start, start + n))


def test_full_blocks_only():
    idx = PrefixIndex(capacity_tokens=1000, block_tokens=4)
    idx.insert(seq(0, 10))  # 2 full blocks, 2 tokens left over
    assert len(idx) == 2 and idx.tokens == 8
    assert idx.match(seq(0, 10)) == 8
    assert idx.match(seq(0, 7)) == 4  # the second block is not complete in the query
    assert idx.match(seq(0, 3)) == 0
    assert idx.match([]) == 0


def test_shared_first_block_matches_one_block():
    idx = PrefixIndex(1000, block_tokens=4)
    idx.insert(seq(0, 12))
    other = seq(0, 4) + [99, 98, 97, 96] + seq(8, 4)
    assert idx.match(other) == 4


def test_chaining_a_block_matches_only_after_the_same_prefix():
    idx = PrefixIndex(1000, block_tokens=4)
    idx.insert(seq(0, 8))
    # Block [4..7] alone, or after a different first block, is not cached.
    assert idx.match(seq(4, 4)) == 0
    assert idx.match([9, 9, 9, 9] + seq(4, 4)) == 0


def test_hashes_are_chained_and_pure():
    idx = PrefixIndex(1000, block_tokens=2)
    a = idx.hashes([1, 2, 3, 4])
    b = idx.hashes([1, 2, 3, 4, 5])
    c = idx.hashes([0, 2, 3, 4])
    assert a == b and len(a) == 2
    assert c[1] != a[1]  # same tokens in block 1, different parent
    assert len(idx) == 0 and a[0] not in idx


def test_lru_capacity_evicts_least_recently_used():
    idx = PrefixIndex(capacity_tokens=16, block_tokens=4)  # 4 blocks
    idx.insert(seq(0, 8))  # A: 2 blocks
    idx.insert(seq(100, 8))  # B: 2 blocks
    assert len(idx) == 4
    assert idx.match(seq(0, 8)) == 8  # touch A: B is now the oldest
    idx.insert(seq(200, 8))  # C: evicts B
    assert len(idx) == 4
    assert idx.match(seq(0, 8)) == 8
    assert idx.match(seq(200, 8)) == 8
    assert idx.match(seq(100, 8)) == 0


def test_eviction_drops_leaves_before_their_roots():
    idx = PrefixIndex(capacity_tokens=12, block_tokens=4)  # 3 blocks
    idx.insert(seq(0, 12))  # one chain of 3
    idx.insert(seq(0, 4) + seq(50, 4))  # shares the root, adds a 4th block: one must go
    assert len(idx) == 3
    # The old chain's leaf went; its root (touched last) and middle block stay reachable.
    assert idx.match(seq(0, 4) + seq(50, 4)) == 8
    assert idx.match(seq(0, 12)) == 8


def test_prompt_larger_than_capacity_keeps_its_beginning():
    idx = PrefixIndex(capacity_tokens=8, block_tokens=4)
    idx.insert(seq(0, 40))
    assert len(idx) == 2
    assert idx.match(seq(0, 40)) == 8


def test_match_without_touch_does_not_refresh():
    idx = PrefixIndex(capacity_tokens=8, block_tokens=4)  # 2 blocks
    idx.insert(seq(0, 4))
    idx.insert(seq(10, 4))
    assert idx.match(seq(0, 4), touch=False) == 4
    idx.insert(seq(20, 4))  # evicts the oldest: still the first one
    assert idx.match(seq(0, 4)) == 0
    assert idx.match(seq(10, 4)) == 4


def test_clear_and_repr():
    idx = PrefixIndex(100, block_tokens=4)
    idx.insert(seq(0, 8))
    idx.clear()
    assert len(idx) == 0 and idx.match(seq(0, 8)) == 0
    assert "0/25 blocks" in repr(idx)


def test_bad_arguments():
    with pytest.raises(ValueError):
        PrefixIndex(100, block_tokens=0)
    with pytest.raises(ValueError):
        PrefixIndex(-1)


def test_4k_prompt_is_fast():
    idx = PrefixIndex(capacity_tokens=1 << 20)
    for k in range(50):  # a populated index
        idx.insert(seq(k * 10_000, 4096))
    prompt = seq(0, 4096)
    t0 = time.perf_counter()
    for _ in range(20):
        assert idx.match(prompt) == 4096
        idx.insert(prompt)
    per_op = (time.perf_counter() - t0) / 40
    assert per_op < 2e-3, f"{per_op * 1e3:.2f} ms per 4K-token match/insert"


@given(
    prompts=st.lists(st.lists(st.integers(0, 3), max_size=24), max_size=12),
    query=st.lists(st.integers(0, 3), max_size=24),
)
def test_match_is_the_longest_inserted_block_prefix_when_nothing_is_evicted(prompts, query):
    idx = PrefixIndex(capacity_tokens=10_000, block_tokens=3)
    for p in prompts:
        idx.insert(p)
    expected = 0
    for p in prompts:
        n = 0
        while n + 3 <= min(len(p), len(query)) and p[n : n + 3] == query[n : n + 3]:
            n += 3
        expected = max(expected, n)
    assert idx.match(query) == expected


@given(st.lists(st.lists(st.integers(0, 50), max_size=40), max_size=30))
def test_never_holds_more_than_capacity(prompts):
    idx = PrefixIndex(capacity_tokens=20, block_tokens=4)
    for p in prompts:
        idx.insert(p)
        assert len(idx) <= 5
        # The prompt just inserted keeps its beginning, however much it had to evict.
        assert idx.match(p) == min(len(p) // 4, 5) * 4


def test_cache_namespaces_never_share_a_block():
    idx = PrefixIndex(capacity_tokens=1000, block_tokens=4)
    ids = list(range(16))
    idx.insert(ids, '["tenant:a", null]')
    assert idx.match(ids, '["tenant:a", null]') == 16
    assert idx.match(ids, '["tenant:b", null]') == 0
    assert idx.match(ids) == 0  # the default namespace is one of its own
    idx.insert(ids)
    assert idx.match(ids) == 16
