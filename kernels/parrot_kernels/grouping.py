"""Choosing which requests of a batch run shared-prefix attention together.

Each request reports its deepest cached prefix as (node, length): node is any hashable id of
that prefix (e.g. a radix-tree node), length its size in tokens. Requests with the same node
share that prefix's KV and form a group; groups that are too small, or prefixes too short to
repay the extra merge, fall back to per-request attention.

Pure Python: the scheduler plans batches without touching torch.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

PrefixRef = tuple[Hashable, int] | None


@dataclass(frozen=True)
class PrefixGroup:
    node: Hashable
    prefix_len: int
    members: tuple[int, ...]  # batch indices, ascending


@dataclass(frozen=True)
class BatchPlan:
    groups: tuple[PrefixGroup, ...]  # ordered by first member
    singles: tuple[int, ...]  # batch indices that run per-request, ascending


def plan_shared_prefix(
    prefixes: Sequence[PrefixRef], *, min_group_size: int = 2, min_prefix_len: int = 64
) -> BatchPlan:
    """Group batch entries by shared prefix node.

    prefixes[i] is request i's (node, prefix_len) or None when it has no cached prefix. A group
    is kept when it has at least min_group_size members and prefix_len >= min_prefix_len; every
    other request lands in singles. Every index appears exactly once in the plan.
    """
    if min_group_size < 2:
        raise ValueError("a shared-prefix group needs at least 2 members")
    members: dict[Hashable, list[int]] = {}
    length: dict[Hashable, int] = {}
    singles: list[int] = []
    for i, ref in enumerate(prefixes):
        if ref is None:
            singles.append(i)
            continue
        node, n = ref
        if n < 0:
            raise ValueError(f"request {i}: negative prefix length {n}")
        if length.setdefault(node, n) != n:
            raise ValueError(f"node {node!r} reported with lengths {length[node]} and {n}")
        members.setdefault(node, []).append(i)
    groups = []
    for node, idx in members.items():  # dicts keep first-seen order: sorted by first member
        if len(idx) >= min_group_size and length[node] >= min_prefix_len:
            groups.append(PrefixGroup(node, length[node], tuple(idx)))
        else:
            singles.extend(idx)
    return BatchPlan(tuple(groups), tuple(sorted(singles)))
