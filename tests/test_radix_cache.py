"""Radix prefix cache: matching, splitting, namespaces, locking and LRU eviction."""

from parrot_server.engine.kv_allocator import KVSlotAllocator
from parrot_server.engine.radix_cache import RadixCache


def test_longest_prefix_match_splits_edges():
    cache = RadixCache()
    cache.insert(None, [1, 2, 3, 4], [10, 11, 12, 13])
    m = cache.match(None, [1, 2, 9])
    assert m.slots == [10, 11]
    assert m.node.depth == 2  # the edge was split at the divergence
    assert cache.match(None, [1, 2, 3, 4, 5]).slots == [10, 11, 12, 13]
    assert cache.match(None, [7]).length == 0
    assert cache.cached_tokens == 4


def test_insert_returns_duplicate_slots_and_keeps_cached_copy():
    cache = RadixCache()
    cache.insert(None, [1, 2, 3], [10, 11, 12])
    node, dup = cache.insert(None, [1, 2, 3, 4], [20, 21, 22, 23])
    assert dup == [20, 21, 22]
    assert cache.match(None, [1, 2, 3, 4]).slots == [10, 11, 12, 23]
    assert node.depth == 4
    assert cache.cached_tokens == 4


def test_namespaces_never_share():
    cache = RadixCache()
    cache.insert("tenant-a", [1, 2, 3], [10, 11, 12])
    assert cache.match("tenant-b", [1, 2, 3]).length == 0
    assert cache.match(None, [1, 2, 3]).length == 0
    assert cache.match("tenant-a", [1, 2, 3]).length == 3


def test_lru_eviction_skips_locked_paths():
    cache = RadixCache()
    a, _ = cache.insert(None, [1, 2, 3], [0, 1, 2])
    cache.insert(None, [1, 2, 7, 8], [0, 1, 3, 4])  # shares [1, 2]
    cache.insert(None, [5, 6], [5, 6])
    cache.match(None, [1, 2, 7, 8])  # most recent
    cache.lock(a)
    assert cache.evictable_tokens == 4  # [7, 8] and [5, 6]; [1, 2, 3] is locked
    freed = cache.evict(1)
    assert sorted(freed) == [5, 6]  # least recently used leaf goes first, whole
    freed = cache.evict(100)
    assert sorted(freed) == [3, 4]
    assert cache.match(None, [1, 2, 3]).slots == [0, 1, 2]
    cache.unlock(a)
    assert sorted(cache.evict(100)) == [0, 1, 2]
    assert cache.cached_tokens == 0


def test_lock_survives_split():
    cache = RadixCache()
    node, _ = cache.insert(None, [1, 2, 3, 4], [0, 1, 2, 3])
    cache.lock(node)
    cache.match(None, [1, 2, 9])  # splits the locked edge
    assert cache.evictable_tokens == 0
    assert cache.evict(10) == []
    cache.unlock(node)
    assert cache.evictable_tokens == 4


def test_allocator_round_trip():
    alloc = KVSlotAllocator(4)
    a = alloc.allocate(3)
    assert a == [0, 1, 2]
    assert alloc.allocate(2) is None and alloc.num_free == 1
    alloc.free(a)
    assert alloc.num_free == 4
    assert sorted(alloc.allocate(4)) == [0, 1, 2, 3]


def test_deepest_shared_prefix_among_nodes():
    cache = RadixCache()
    base = list(range(1, 11))
    a, _ = cache.insert(None, base + [20, 21], list(range(12)))
    b, _ = cache.insert(None, base + [30, 31], list(range(12, 24)))
    c, _ = cache.insert(None, base[:5] + [99], list(range(24, 30)))
    d, _ = cache.insert(None, [7, 7], [30, 31])
    shared = cache.deepest_shared([a, b, c, d, a])
    assert [s[1] if s else None for s in shared] == [12, 10, 5, None, 12]  # a twice shares all of a
    assert shared[1][0] is cache.match(None, base).node
    assert cache.deepest_shared([a, b], min_share=3) == [None, None]
