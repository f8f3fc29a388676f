"""The global scheduler: which engine (model replica) each request goes to.

An `EnginePool` keeps one `EngineState` per engine, turns each submission into a
`PlacementItem` (token ids, objective, task group, app; both in `engine_state.py`) and asks a
`Placement` policy for one `Decision` per item. `AppAwarePlacement` is Parrot's policy: model,
prefix affinity, task groups kept together, latency work on small batches and throughput work
packed. The baselines (`RoundRobinPlacement`, `LeastLoadedPlacement`) are there to measure it against.

Pure Python, no I/O: a policy sees only the states it is given, and never mutates them (the
pool calls `EngineState.start` once the requests are sent). Within one `place` call a policy
works on projections of the states (`placement_batch.py`), so a batch accounts for the load it
has just assigned.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from typing import Any

from .engine_state import LATENCY_PRIORITY, THROUGHPUT_PRIORITY, EngineState, PlacementItem
from .placement_batch import Decision, EngineView, NoEngineError, PlacementBatch

__all__ = [
    "AppAwarePlacement",
    "Decision",
    "EngineState",
    "LeastLoadedPlacement",
    "NoEngineError",
    "Placement",
    "PlacementItem",
    "PlacementPolicy",
    "RoundRobinPlacement",
]


class Placement(abc.ABC):
    """Where each request of a batch goes."""

    @abc.abstractmethod
    def place(
        self, items: Sequence[PlacementItem], engines: Sequence[EngineState]
    ) -> list[Decision]:
        """One decision per item, in order, each on a healthy engine serving the item's model;
        raises `NoEngineError` if an item has none. Never raises for load: overloaded engines
        queue. Accounts within the batch for what it has just assigned; mutates nothing."""


class RoundRobinPlacement(Placement):
    """Baseline: the next healthy engine of the item's model, in turn, whatever its load."""

    def __init__(self) -> None:
        self._turn = 0

    def place(
        self, items: Sequence[PlacementItem], engines: Sequence[EngineState]
    ) -> list[Decision]:
        batch = PlacementBatch(engines)
        out = []
        for item in items:
            cands = batch.candidates(item)
            view = cands[self._turn % len(cands)]
            self._turn += 1
            out.append(batch.assign(item, view, f"round-robin: {view.describe()}"))
        return out


class LeastLoadedPlacement(Placement):
    """Baseline: the engine with the smallest share of its KV pool reserved or of its running
    slots taken (then fewest running), whatever it has cached."""

    def place(
        self, items: Sequence[PlacementItem], engines: Sequence[EngineState]
    ) -> list[Decision]:
        batch = PlacementBatch(engines)
        out = []
        for item in items:
            view = min(batch.candidates(item), key=EngineView.load_key)
            out.append(batch.assign(item, view, f"least loaded: {view.describe()}"))
        return out


class AppAwarePlacement(Placement):
    """Parrot's placement, rule by rule:

    1. Model: only healthy engines serving the item's model (`NoEngineError` if none).
    2. Prefix affinity: the engine with the longest cached prefix of the prompt (at least
       `min_affinity_tokens`; ties: less loaded) unless it is overloaded: reserved tokens plus
       the uncached prompt and `max_new_tokens` above `high_watermark` of its KV pool, or all
       running slots taken. Prefixes placed earlier in the same batch count as cached.
    3. Task group (the maps of one reduce, same batch): all on one engine when the whole group
       fits, chosen by the affinity of the group's common prefix, then by objective; otherwise
       split: the best engine takes what fits, then the next best (most room first).
    4. Objective: latency work (priority 2) goes where the batch is small (engines under
       `latency_batch_limit` running, then those without throughput work, then fewest running);
       throughput work (0) is packed onto the most loaded engine that still fits, preferring
       engines without latency work, so big batches do not slow latency work; unknown (1) goes
       to the least loaded.
       Trade-off: affinity comes first, but a latency item skips its affinity engine when that
       one runs `latency_batch_limit` requests or more and a lighter engine is free: prefilling
       the prefix again costs once, a big batch slows every one of its decode steps.
    5. Balance: affinity yields (for latency and unknown work) when its engine runs more than
       `balance_abs` requests more than the lightest engine and `balance_rel` times as many: a
       queue costs more than prefilling the prefix again (SGLang's router balances the same way).
    6. Everything overloaded: the least loaded engine anyway (engines queue; never an error).

    Every `Decision.reason` names the rule and its numbers.
    """

    def __init__(
        self,
        *,
        min_affinity_tokens: int = 32,  # two 16-token blocks: shorter matches save little
        high_watermark: float = 0.9,  # share of the KV pool placement may reserve on an engine
        latency_batch_limit: int = 8,  # a latency item's engine should run fewer than this
        # Affinity yields to load balance when its engine runs more than `balance_abs` requests
        # more than the lightest engine, and more than `balance_rel` times as many.
        balance_abs: int = 2,
        balance_rel: float = 1.5,
    ) -> None:
        if min_affinity_tokens < 1 or high_watermark <= 0 or latency_batch_limit < 1:
            raise ValueError(
                "need min_affinity_tokens >= 1, high_watermark > 0, latency_batch_limit >= 1"
            )
        self.min_affinity_tokens = min_affinity_tokens
        self.high_watermark = high_watermark
        self.latency_batch_limit = latency_batch_limit
        self.balance_abs = balance_abs
        self.balance_rel = balance_rel

    def place(
        self, items: Sequence[PlacementItem], engines: Sequence[EngineState]
    ) -> list[Decision]:
        batch = PlacementBatch(engines)
        groups: dict[tuple[str, str | None], list[int]] = {}
        for k, item in enumerate(items):
            if item.task_group is not None:
                groups.setdefault((item.task_group, item.model), []).append(k)
        out: list[Decision | None] = [None] * len(items)
        for k, item in enumerate(items):
            if out[k] is not None:
                continue
            members = groups.get((item.task_group, item.model), []) if item.task_group else []
            if len(members) > 1:
                placed = self._place_group([items[j] for j in members], batch)
                for j, d in zip(members, placed, strict=True):
                    out[j] = d
            else:
                out[k] = self._place_one(item, batch)
        return out  # type: ignore[return-value]  # every slot is filled above

    # -- rules ----------------------------------------------------------------------------------
    def _overloaded(self, view: EngineView, need: int, n: int = 1) -> bool:
        s = view.state
        return (
            view.reserved + need > self.high_watermark * s.kv_pool_tokens
            or view.running + n > s.max_running_requests
        )

    def _need(self, item: PlacementItem, cached: int) -> int:
        return len(item.prompt_ids) - cached + item.max_new_tokens

    def _latency_pool(self, priority: int, views: list[EngineView]) -> list[EngineView]:
        """Engines a latency item may take by affinity: the light ones, when there are any."""
        if priority < LATENCY_PRIORITY:
            return views
        light = [v for v in views if v.running < self.latency_batch_limit]
        return light or views

    def _balanced(self, priority: int, views: list[EngineView]) -> list[EngineView]:
        """Engines an item may take by affinity without unbalancing the pool: not those running
        far more requests than the lightest one (a queue there costs more than prefilling the
        prefix again elsewhere). Throughput work is packed on purpose: no balancing."""
        if priority <= THROUGHPUT_PRIORITY or len(views) < 2:
            return views
        least = min(v.running for v in views)
        return [
            v
            for v in views
            if v.running - least <= self.balance_abs or v.running <= self.balance_rel * least
        ]

    def _by_objective(self, priority: int, views: list[EngineView]) -> tuple[EngineView, str]:
        """The engine the objective prefers among `views` (all of which fit), and why."""
        if priority >= LATENCY_PRIORITY:
            lim = self.latency_batch_limit
            v = min(
                views, key=lambda v: (v.running >= lim, v.throughput > 0, v.running, v.reserved)
            )
            return v, f"latency: smallest batch (limit {lim}) on"
        if priority <= THROUGHPUT_PRIORITY:
            v = min(views, key=lambda v: (v.latency > 0, -v.utilization, -v.running))
            return v, "throughput: packed on the most loaded engine that fits:"
        return min(views, key=EngineView.load_key), "least loaded:"

    def _place_one(self, item: PlacementItem, batch: PlacementBatch, note: str = "") -> Decision:
        cands = batch.candidates(item)
        cached = {id(v): batch.cached(item, v) for v in cands}
        fit = [v for v in cands if not self._overloaded(v, self._need(item, cached[id(v)]))]
        if not fit:
            v = min(cands, key=EngineView.load_key)
            return batch.assign(
                item, v, f"{note}all engines overloaded: least loaded {v.describe()}"
            )
        pool = self._balanced(item.priority, self._latency_pool(item.priority, fit))
        affine = [v for v in pool if cached[id(v)] >= self.min_affinity_tokens]
        if affine:
            v = min(affine, key=lambda v: (-cached[id(v)], v.load_key()))
            why = f"prefix affinity: {cached[id(v)]} cached tokens on {v.describe()}"
            return batch.assign(item, v, note + why)
        v, rule = self._by_objective(item.priority, fit)
        why = f"{rule} {v.describe()}"
        best = max(cands, key=lambda c: cached[id(c)])
        if cached[id(best)] >= self.min_affinity_tokens and best is not v:
            # Say why the cached prefix was not used: the user sees a cache miss otherwise.
            busy = (
                "overloaded"
                if best not in fit
                else f"batch >= {self.latency_batch_limit}"
                if item.priority >= LATENCY_PRIORITY and best.running >= self.latency_batch_limit
                else f"load imbalance ({best.running} running vs {v.running})"
            )
            why += f"; prefix ({cached[id(best)]} tokens) on {best.state.name} skipped: {busy}"
        return batch.assign(item, v, note + why)

    def _place_group(self, members: list[PlacementItem], batch: PlacementBatch) -> list[Decision]:
        group, n = members[0].task_group, len(members)
        cands = batch.candidates(members[0])  # one model per group: grouped by (group, model)
        priority = max(m.priority for m in members)
        common: dict[int, int] = {}  # id(view) -> cached tokens of the group's common prefix
        fit: list[EngineView] = []
        for v in cands:
            hashes = [batch.hashes(m, v) for m in members]
            shared = _common_len(hashes)
            common[id(v)] = v.cached(hashes[0][:shared])
            # The first member inserts the common prefix; the others find it cached.
            need, floor = 0, common[id(v)]
            for m, h in zip(members, hashes, strict=True):
                need += self._need(m, max(v.cached(h), floor))
                floor = shared * v.state.prefixes.block_tokens
            if not self._overloaded(v, need, n):
                fit.append(v)
        if fit:
            pool = self._latency_pool(priority, fit)
            affine = [v for v in pool if common[id(v)] >= self.min_affinity_tokens]
            if affine:
                v = min(affine, key=lambda v: (-common[id(v)], v.load_key()))
                rule = f"common prefix {common[id(v)]} cached tokens on"
            else:
                v, rule = self._by_objective(priority, fit)
            why = f"task group {group}: {n} calls together ({rule} {v.describe()})"
            return [batch.assign(m, v, why) for m in members]
        # Split: affinity first, then the engine with the most room, so the group spans few.
        order = sorted(
            cands,
            key=lambda v: (
                -(common[id(v)] if common[id(v)] >= self.min_affinity_tokens else 0),
                v.load_key(),
            ),
        )
        out: dict[int, Decision] = {}
        for v in order:
            why = (
                f"task group {group} split ({n} calls do not fit one engine): part on"
                f" {v.describe()}, common prefix {common[id(v)]} cached tokens"
            )
            for k, m in enumerate(members):
                if k not in out and not self._overloaded(v, self._need(m, batch.cached(m, v))):
                    out[k] = batch.assign(m, v, why)
        note = f"task group {group} split ({n} calls do not fit one engine), rest: "
        for k, m in enumerate(members):
            if k not in out:
                out[k] = self._place_one(m, batch, note)
        return [out[k] for k in range(n)]


def _common_len(hash_lists: list[list[int]]) -> int:
    """Blocks the chains have in common from the start (chained: equal key, equal prefix)."""
    first = hash_lists[0]
    n = len(first)
    for other in hash_lists[1:]:
        n = min(n, len(other))
        while n and other[n - 1] != first[n - 1]:
            n -= 1
    return n


class PlacementPolicy(enum.StrEnum):
    """The `--placement` choices."""

    APP_AWARE = "app-aware"
    ROUND_ROBIN = "round-robin"
    LEAST_LOADED = "least-loaded"

    def create(self, **options: Any) -> Placement:
        """A fresh policy; `options` go to its constructor (AppAwarePlacement's thresholds)."""
        return _POLICIES[self](**options)


_POLICIES: dict[PlacementPolicy, type[Placement]] = {
    PlacementPolicy.APP_AWARE: AppAwarePlacement,
    PlacementPolicy.ROUND_ROBIN: RoundRobinPlacement,
    PlacementPolicy.LEAST_LOADED: LeastLoadedPlacement,
}
