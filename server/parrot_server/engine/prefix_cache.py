"""The prefix-cache interface the scheduler codes against (the radix tree implements it).

A prefix cache maps token sequences, per namespace, to the KV slots that hold them. Entries in
use are locked (reference counted) so they survive eviction; unlocked ones are evicted LRU.
Namespaces (SGLang's `extra_key`) never share entries: tenants must not read each other's KV.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

Namespace = Hashable  # None is the default, shared namespace


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class PrefixMatch:
    """Longest cached prefix of a token sequence."""

    node: Any  # opaque handle: pass it to lock/unlock; identifies the shared prefix
    slots: list[int] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.slots)


class PrefixCache(ABC):
    @abstractmethod
    def match(self, namespace: Namespace, tokens: Sequence[int]) -> PrefixMatch:
        """Longest cached prefix of `tokens`; marks it recently used."""

    @abstractmethod
    def insert(
        self, namespace: Namespace, tokens: Sequence[int], slots: Sequence[int]
    ) -> tuple[Any, list[int]]:
        """Cache `tokens` held in `slots` (same length). The cache owns the slots afterwards.

        Returns the node of the whole sequence and the slots that were already cached under
        another copy of the same tokens: the caller frees those.
        """

    @abstractmethod
    def lock(self, node: Any) -> None:
        """Protect `node` and its ancestors from eviction (counted)."""

    @abstractmethod
    def unlock(self, node: Any) -> None:
        """Undo one `lock`."""

    @abstractmethod
    def deepest_shared(
        self, nodes: Sequence[Any], min_share: int = 2
    ) -> list[tuple[Any, int] | None]:
        """For each node, its deepest ancestor-or-self that at least `min_share` of `nodes` lie
        under, with that ancestor's depth in tokens (None where there is none). Requests locked
        on those nodes share exactly that many leading KV slots."""

    @abstractmethod
    def evict(self, num_tokens: int) -> list[int]:
        """Drop least-recently-used unlocked entries until `num_tokens` slots are freed (or
        nothing evictable is left). Returns the freed slots."""

    @abstractmethod
    def reset(self) -> list[int]:
        """Drop every unlocked entry (flush); returns the freed slots."""

    @property
    @abstractmethod
    def cached_tokens(self) -> int:
        """Slots held by the cache in total."""

    @property
    @abstractmethod
    def evictable_tokens(self) -> int:
        """Slots that `evict` could free now."""
