"""One `Placement.place` call's working state: the healthy engines projected over the batch
(so a batch accounts for the load it has just assigned), the items' block hashes, and the
`Decision`s it makes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..engine.errors import EngineUnavailableError
from .engine_state import LATENCY_PRIORITY, THROUGHPUT_PRIORITY, EngineState, PlacementItem


@dataclass(frozen=True)
class Decision:
    rid: str
    engine: str  # EngineState.name
    reason: str  # the rule and its numbers, for debug logs
    expected_cached_tokens: int


class NoEngineError(EngineUnavailableError):
    """No healthy engine serves the item's model (a 503)."""


class EngineView:
    """One engine's state projected over the batch being placed: counters plus the prefixes
    placed on it earlier in the batch (the engine will have them by the time they matter)."""

    __slots__ = ("state", "running", "latency", "throughput", "reserved", "added")

    def __init__(self, state: EngineState) -> None:
        self.state = state
        self.running = state.running
        self.latency = state.running_latency
        self.throughput = state.running_throughput
        self.reserved = state.reserved_tokens
        self.added: set[int] = set()

    def cached(self, hashes: Sequence[int]) -> int:
        """Leading tokens cached, counting what this batch has already placed here."""
        index, added = self.state.prefixes, self.added
        n = 0
        for h in hashes:
            if h not in index and h not in added:
                break
            n += 1
        return n * index.block_tokens

    def add(self, item: PlacementItem, hashes: Sequence[int]) -> None:
        self.running += 1
        self.latency += item.priority >= LATENCY_PRIORITY
        self.throughput += item.priority <= THROUGHPUT_PRIORITY
        self.reserved += item.tokens - self.cached(hashes)  # as EngineState.start charges
        self.added.update(hashes)

    @property
    def utilization(self) -> float:
        """The binding one of KV and running slots, as a fraction (engines of any size)."""
        s = self.state
        return max(
            self.reserved / max(1, s.kv_pool_tokens), self.running / max(1, s.max_running_requests)
        )

    def load_key(self) -> tuple[float, int, int]:
        return (self.utilization, self.running, self.reserved)

    def describe(self) -> str:
        s = self.state
        return (
            f"{s.name} (load {self.running}/{s.max_running_requests}, {self.latency} latency,"
            f" {self.throughput} throughput; {self.reserved}/{s.kv_pool_tokens} tokens reserved)"
        )


class PlacementBatch:
    """Views of the healthy engines for one `place` call, and the items' block hashes."""

    def __init__(self, engines: Sequence[EngineState]) -> None:
        self.views = [EngineView(e) for e in engines if e.healthy]
        self._hashes: dict[tuple[int, int], list[int]] = {}

    def hashes(self, item: PlacementItem, view: EngineView) -> list[int]:
        index = view.state.prefixes
        key = (id(item), index.block_tokens)  # engines may differ in block size
        got = self._hashes.get(key)
        if got is None:
            got = self._hashes[key] = index.hashes(item.prompt_ids, item.namespace)
        return got

    def cached(self, item: PlacementItem, view: EngineView) -> int:
        return view.cached(self.hashes(item, view))

    def candidates(self, item: PlacementItem) -> list[EngineView]:
        found = [v for v in self.views if item.model is None or v.state.model == item.model]
        if not found:
            have = ", ".join(f"{v.state.name} ({v.state.model})" for v in self.views) or "none"
            what = f"model {item.model!r}" if item.model is not None else "requests"
            raise NoEngineError(f"no healthy engine serves {what} (healthy engines: {have})")
        return found

    def assign(self, item: PlacementItem, view: EngineView, reason: str) -> Decision:
        hashes = self.hashes(item, view)
        cached = view.cached(hashes)
        view.add(item, hashes)
        return Decision(item.rid, view.state.name, reason, cached)
