"""What the global scheduler knows: each request to place (`PlacementItem`) and each engine's
running load and cached prefixes (`EngineState`), kept by the pool as requests start and finish."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from parrot_integrations.protocol.native import Criteria

from .objective import PRIORITY
from .prefix_index import PrefixIndex

LATENCY_PRIORITY = PRIORITY[Criteria.LATENCY]
THROUGHPUT_PRIORITY = PRIORITY[Criteria.THROUGHPUT]


@dataclass(frozen=True)
class PlacementItem:
    """One request to place: its prompt as token ids and what it will reserve."""

    rid: str
    prompt_ids: Sequence[int]
    max_new_tokens: int
    priority: int  # objective.PRIORITY: 2 latency, 1 unknown, 0 throughput
    model: str | None = None  # None: any engine
    task_group: str | None = None
    app: str | None = None
    namespace: str | None = None  # the engine's cache namespace (`Submission.namespace`)

    @property
    def tokens(self) -> int:
        """KV tokens the request may hold at most: prompt + what it may generate."""
        return len(self.prompt_ids) + self.max_new_tokens


@dataclass
class EngineState:
    """One engine as the pool sees it; the pool mutates the counters (`start` / `finish`)."""

    name: str  # e.g. "http://127.0.0.1:30001" or "local"
    model: str
    kv_pool_tokens: int
    max_running_requests: int
    prefixes: PrefixIndex
    healthy: bool = True
    running: int = 0  # requests placed here and not finished
    running_latency: int = 0  # of which latency-priority (priority >= LATENCY_PRIORITY)
    # Sum over running requests of their uncached prompt + max_new_tokens: a prefix shared by
    # many requests occupies the engine's KV once, so it is charged once (to its first request).
    reserved_tokens: int = 0
    running_throughput: int = 0  # of which throughput-priority (priority <= THROUGHPUT_PRIORITY)
    _charged: dict[str, int] = field(default_factory=dict, repr=False)  # rid -> reserved

    def start(self, item: PlacementItem) -> None:
        self.running += 1
        self.running_latency += item.priority >= LATENCY_PRIORITY
        self.running_throughput += item.priority <= THROUGHPUT_PRIORITY
        charge = item.tokens - self.prefixes.match(item.prompt_ids, item.namespace, touch=False)
        self._charged[item.rid] = charge
        self.reserved_tokens += charge
        self.prefixes.insert(item.prompt_ids, item.namespace)  # the engine will have cached it

    def finish(self, item: PlacementItem) -> None:
        # Clamped: a counter gone negative would skew every later placement.
        self.running = max(0, self.running - 1)
        self.running_latency = max(0, self.running_latency - (item.priority >= LATENCY_PRIORITY))
        self.running_throughput = max(
            0, self.running_throughput - (item.priority <= THROUGHPUT_PRIORITY)
        )
        charge = self._charged.pop(item.rid, item.tokens)
        self.reserved_tokens = max(0, self.reserved_tokens - charge)
