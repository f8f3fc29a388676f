"""Radix tree over token ids (RadixAttention-style prefix cache).

Each edge holds a run of tokens and the KV slots of those tokens. A node's `lock_ref` counts
live users of the path ending at it; `lock` walks up so ancestors stay too. Only unlocked leaves
are evicted, least recently used first, so a shared prefix outlives the requests that used it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

from .prefix_cache import Namespace, PrefixCache, PrefixMatch, common_prefix_len

_clock = itertools.count()  # monotonic access stamps; cheaper and steadier than time()


class RadixNode:
    __slots__ = ("tokens", "slots", "children", "parent", "lock_ref", "last_access", "namespace")

    def __init__(
        self,
        tokens: tuple[int, ...] = (),
        slots: list[int] | None = None,
        parent: RadixNode | None = None,
        namespace: Namespace = None,
    ) -> None:
        self.tokens = tokens
        self.slots = slots or []
        self.children: dict[int, RadixNode] = {}
        self.parent = parent
        self.lock_ref = 0
        self.last_access = next(_clock)
        self.namespace = namespace

    @property
    def depth(self) -> int:
        """Tokens from the root to the end of this node."""
        n, node = 0, self
        while node is not None:
            n += len(node.tokens)
            node = node.parent
        return n

    def __lt__(self, other: RadixNode) -> bool:  # heap order for eviction
        return self.last_access < other.last_access

    def __repr__(self) -> str:
        return f"RadixNode(len={len(self.tokens)}, lock={self.lock_ref}, children={len(self.children)})"


class RadixCache(PrefixCache):
    def __init__(self) -> None:
        self._roots: dict[Namespace, RadixNode] = {}
        self._cached = 0
        self._locked = 0  # slots on locked nodes (not evictable)

    # -- lookup -------------------------------------------------------------------------------
    def _root(self, namespace: Namespace) -> RadixNode:
        root = self._roots.get(namespace)
        if root is None:
            root = self._roots[namespace] = RadixNode(namespace=namespace)
            root.lock_ref = 1  # roots are never evicted
        return root

    def _split(self, node: RadixNode, at: int) -> RadixNode:
        """Cut `node`'s edge after `at` tokens; returns the new upper node."""
        upper = RadixNode(node.tokens[:at], node.slots[:at], node.parent, node.namespace)
        upper.lock_ref = node.lock_ref
        upper.last_access = node.last_access
        node.parent.children[upper.tokens[0]] = upper
        node.tokens, node.slots, node.parent = node.tokens[at:], node.slots[at:], upper
        upper.children[node.tokens[0]] = node
        return upper

    def _walk(self, namespace: Namespace, tokens: Sequence[int]) -> tuple[list[RadixNode], int]:
        """Nodes matching a prefix of `tokens` from the root (the last edge split where they
        diverge, all marked used), and the matched length."""
        node, path = self._root(namespace), []
        stamp = next(_clock)
        i = 0
        while i < len(tokens) and (child := node.children.get(tokens[i])) is not None:
            n = common_prefix_len(child.tokens, tokens[i:])
            if n < len(child.tokens):
                child = self._split(child, n)
            child.last_access = stamp
            path.append(child)
            node = child
            i += n
        return path, i

    def match(self, namespace: Namespace, tokens: Sequence[int]) -> PrefixMatch:
        path, _ = self._walk(namespace, tokens)
        node = path[-1] if path else self._root(namespace)
        return PrefixMatch(node, [s for n in path for s in n.slots])

    def insert(
        self, namespace: Namespace, tokens: Sequence[int], slots: Sequence[int]
    ) -> tuple[RadixNode, list[int]]:
        if len(tokens) != len(slots):
            raise ValueError(f"{len(tokens)} tokens but {len(slots)} slots")
        path, matched = self._walk(namespace, tokens)
        # Tokens already cached under other slots keep the cached copy; the caller frees ours.
        cached = [s for n in path for s in n.slots]
        duplicates = [s for s, c in zip(slots[:matched], cached, strict=True) if s != c]
        node = path[-1] if path else self._root(namespace)
        if matched == len(tokens):
            return node, duplicates
        leaf = RadixNode(tuple(tokens[matched:]), list(slots[matched:]), node, namespace)
        leaf.last_access = next(_clock)
        node.children[leaf.tokens[0]] = leaf
        self._cached += len(leaf.slots)
        return leaf, duplicates

    # -- locking ------------------------------------------------------------------------------
    def lock(self, node: RadixNode) -> None:
        while node is not None:
            if node.lock_ref == 0:
                self._locked += len(node.slots)
            node.lock_ref += 1
            node = node.parent

    def unlock(self, node: RadixNode) -> None:
        while node is not None:
            if node.lock_ref <= 0:
                raise RuntimeError("unlock without a matching lock")
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self._locked -= len(node.slots)
            node = node.parent

    def deepest_shared(
        self, nodes: Sequence[RadixNode], min_share: int = 2
    ) -> list[tuple[RadixNode, int] | None]:
        paths = []  # per node: its ancestors-or-self below the root, deepest first
        share: dict[int, int] = {}
        for node in nodes:
            path = []
            while node is not None and node.parent is not None:
                path.append(node)
                share[id(node)] = share.get(id(node), 0) + 1
                node = node.parent
            paths.append(path)
        result: list[tuple[RadixNode, int] | None] = []
        for path in paths:
            found = None
            for i, node in enumerate(path):
                if share[id(node)] >= min_share:
                    found = (node, sum(len(n.tokens) for n in path[i:]))
                    break
            result.append(found)
        return result

    # -- eviction -----------------------------------------------------------------------------
    def _evictable_leaves(self) -> list[RadixNode]:
        leaves, stack = [], list(self._roots.values())
        while stack:
            node = stack.pop()
            if not node.children and node.lock_ref == 0:
                leaves.append(node)
            stack.extend(node.children.values())
        return leaves

    def evict(self, num_tokens: int) -> list[int]:
        freed: list[int] = []
        heap = self._evictable_leaves()
        heapq.heapify(heap)
        while heap and len(freed) < num_tokens:
            leaf = heapq.heappop(heap)
            freed.extend(leaf.slots)
            self._cached -= len(leaf.slots)
            parent = leaf.parent
            del parent.children[leaf.tokens[0]]
            if parent.parent is not None and not parent.children and parent.lock_ref == 0:
                heapq.heappush(heap, parent)
        return freed

    def reset(self) -> list[int]:
        return self.evict(self._cached)

    @property
    def cached_tokens(self) -> int:
        return self._cached

    @property
    def evictable_tokens(self) -> int:
        return self._cached - self._locked
