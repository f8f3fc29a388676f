"""The global scheduler's placement policies on synthetic engines and DAG-like workloads."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parrot_server.core.placement import (
    AppAwarePlacement,
    Decision,
    EngineState,
    LeastLoadedPlacement,
    NoEngineError,
    Placement,
    PlacementItem,
    PlacementPolicy,
    RoundRobinPlacement,
)
from parrot_server.core.prefix_index import PrefixIndex
from parrot_server.error_status import status_of

LAT, UNK, THR = 2, 1, 0
_rid = itertools.count()


def engine(name: str, model: str = "m", kv: int = 100_000, slots: int = 32, **kw) -> EngineState:
    return EngineState(name, model, kv, slots, PrefixIndex(kv), **kw)


def item(ids, priority: int = UNK, max_new: int = 16, **kw) -> PlacementItem:
    return PlacementItem(f"r{next(_rid)}", list(ids), max_new, priority, **kw)


def prompt(prefix: int, n_prefix: int = 128, n_own: int = 40, own: int = 0) -> list[int]:
    """A shared prefix (template text, shared inputs) `prefix`, then this call's own text."""
    return [prefix * 10_000 + k for k in range(n_prefix)] + [
        own * 10_000 + 5_000 + k for k in range(n_own)
    ]


def warm(e: EngineState, ids: list[int]) -> None:
    """The engine ran a request with `ids` earlier (its cache holds the prefix), now finished."""
    it = item(ids)
    e.start(it)
    e.finish(it)


def busy(e: EngineState, n: int, priority: int = UNK, tokens: int = 100) -> None:
    for k in range(n):
        e.start(item(range(900_000 + k * 1000, 900_000 + k * 1000 + tokens), priority, 0))


def names(decisions: list[Decision]) -> list[str]:
    return [d.engine for d in decisions]


def run(policy: Placement, items: list[PlacementItem], engines: list[EngineState]):
    """Place, then start each request as the pool does."""
    decisions = policy.place(items, engines)
    by_name = {e.name: e for e in engines}
    for it, d in zip(items, decisions, strict=True):
        by_name[d.engine].start(it)
    return decisions


# -- engine state --------------------------------------------------------------------------------
def test_start_and_finish_keep_the_counters():
    e = engine("e")
    a, b = item(range(100), LAT, 28), item(range(50), THR, 10)
    e.start(a)
    e.start(b)
    # b's prompt is a's first 50 tokens: its 3 full blocks (48 tokens) are a's, charged once.
    assert (e.running, e.running_latency, e.running_throughput, e.reserved_tokens) == (2, 1, 1, 140)
    assert e.prefixes.match(list(range(100))) == 96  # start records the prompt
    e.finish(a)
    e.finish(b)
    assert (e.running, e.running_latency, e.running_throughput, e.reserved_tokens) == (0, 0, 0, 0)
    e.finish(a)  # a stray second finish cannot drive the counters negative
    assert (e.running, e.reserved_tokens) == (0, 0)


# -- model, health, errors -----------------------------------------------------------------------
@pytest.mark.parametrize("policy", list(PlacementPolicy))
def test_model_filtering_and_unhealthy_engines(policy):
    engines = [engine("a1", "a"), engine("b1", "b"), engine("b2", "b", healthy=False)]
    p = policy.create()
    ds = p.place([item(range(40), model="b") for _ in range(3)], engines)
    assert names(ds) == ["b1"] * 3
    ds = p.place([item(range(40), model="a"), item(range(40))], engines)
    assert ds[0].engine == "a1" and ds[1].engine in {"a1", "b1"}


@pytest.mark.parametrize("policy", list(PlacementPolicy))
def test_no_engine_error_is_a_503(policy):
    engines = [engine("a1", "a"), engine("b1", "b", healthy=False)]
    with pytest.raises(NoEngineError, match="'b'") as info:
        policy.create().place([item(range(10), model="b")], engines)
    assert status_of(info.value)[0] == 503
    with pytest.raises(NoEngineError):
        policy.create().place([item(range(10))], [engine("x", healthy=False)])
    assert policy.create().place([], engines) == []


def test_place_does_not_mutate_the_states():
    engines = [engine("e1"), engine("e2")]
    warm(engines[1], prompt(1))
    before = [(e.running, e.reserved_tokens, len(e.prefixes)) for e in engines]
    AppAwarePlacement().place([item(prompt(2)) for _ in range(5)], engines)
    assert [(e.running, e.reserved_tokens, len(e.prefixes)) for e in engines] == before


# -- prefix affinity -----------------------------------------------------------------------------
def test_affinity_wins_over_load():
    e1, e2 = engine("e1"), engine("e2")
    warm(e2, prompt(7, own=1))
    busy(e2, 2)  # within the balance margin (balance_abs=2)
    (d,) = AppAwarePlacement().place([item(prompt(7, own=2))], [e1, e2])
    assert d.engine == "e2"
    assert d.expected_cached_tokens == 128
    assert d.reason.startswith("prefix affinity: 128 cached tokens on e2")


def test_affinity_yields_to_a_large_imbalance():
    """The cached engine runs 5 requests, the other none: a queue that long costs more than
    prefilling the prefix again, so the idle engine takes it (and the reason says so)."""
    e1, e2 = engine("e1"), engine("e2")
    warm(e2, prompt(7, own=1))
    busy(e2, 5)
    (d,) = AppAwarePlacement().place([item(prompt(7, own=2))], [e1, e2])
    assert d.engine == "e1"
    assert "load imbalance (5 running vs 0)" in d.reason
    # Balancing can be turned off: affinity then wins until the engine is overloaded.
    (d,) = AppAwarePlacement(balance_abs=10**6).place([item(prompt(7, own=2))], [e1, e2])
    assert d.engine == "e2"


def test_affinity_ties_go_to_the_less_loaded():
    e1, e2 = engine("e1"), engine("e2")
    for e in (e1, e2):
        warm(e, prompt(7))
    busy(e1, 3)
    (d,) = AppAwarePlacement().place([item(prompt(7, own=3))], [e1, e2])
    assert d.engine == "e2" and "prefix affinity" in d.reason


def test_longer_match_wins():
    e1, e2 = engine("e1"), engine("e2")
    warm(e1, prompt(7, n_prefix=64))
    warm(e2, prompt(7, n_prefix=256))
    (d,) = AppAwarePlacement().place([item(prompt(7, n_prefix=256, own=5))], [e1, e2])
    assert (d.engine, d.expected_cached_tokens) == ("e2", 256)


def test_affinity_ignored_when_the_engine_is_overloaded_by_tokens():
    e1, e2 = engine("e1", kv=2000), engine("e2", kv=2000)
    warm(e2, prompt(7))
    busy(e2, 1, tokens=1780)  # reserved 1780 + need (40 uncached + 16 new) > 0.9 * 2000
    (d,) = AppAwarePlacement().place([item(prompt(7, own=1))], [e1, e2])
    assert d.engine == "e1" and d.expected_cached_tokens == 0
    assert "least loaded" in d.reason and "on e2 skipped: overloaded" in d.reason


def test_affinity_ignored_when_all_running_slots_are_taken():
    e1, e2 = engine("e1"), engine("e2", slots=4)
    warm(e2, prompt(7))
    busy(e2, 4)
    (d,) = AppAwarePlacement().place([item(prompt(7, own=1))], [e1, e2])
    assert d.engine == "e1" and "overloaded" in d.reason


def test_short_matches_are_ignored():
    e1, e2 = engine("e1"), engine("e2")
    warm(e2, prompt(7, n_prefix=16))  # one block only: below min_affinity_tokens=32
    busy(e2, 1)
    (d,) = AppAwarePlacement().place([item(prompt(7, n_prefix=16, own=3))], [e1, e2])
    assert d.engine == "e1" and d.reason.startswith("least loaded")
    (d,) = AppAwarePlacement(min_affinity_tokens=16).place(
        [item(prompt(7, n_prefix=16, own=3))], [e1, e2]
    )
    assert d.engine == "e2" and "prefix affinity: 16" in d.reason


def test_within_batch_affinity_follows_an_earlier_item():
    e1, e2 = engine("e1"), engine("e2")
    busy(e1, 1)
    ds = AppAwarePlacement().place([item(prompt(3, own=k)) for k in range(3)], [e1, e2])
    # The first goes to the idle e2; the others follow its prefix although e1 is lighter then.
    assert names(ds) == ["e2", "e2", "e2"]
    assert ds[0].expected_cached_tokens == 0
    assert [d.expected_cached_tokens for d in ds[1:]] == [128, 128]
    assert all("prefix affinity" in d.reason for d in ds[1:])


# -- task groups ---------------------------------------------------------------------------------
def test_task_group_goes_to_one_engine_when_it_fits():
    e1, e2 = engine("e1"), engine("e2")
    maps = [item(prompt(4, n_prefix=16, own=k), UNK, task_group="g") for k in range(6)]
    ds = AppAwarePlacement().place(maps, [e1, e2])
    assert len(set(names(ds))) == 1  # least loaded alone would have spread them
    assert all("task group g: 6 calls together" in d.reason for d in ds)
    # Control: without the group they alternate.
    lone = [item(prompt(4, n_prefix=16, own=k), UNK) for k in range(6)]
    assert set(names(AppAwarePlacement().place(lone, [e1, e2]))) == {"e1", "e2"}


def test_task_group_engine_chosen_by_common_prefix():
    e1, e2 = engine("e1"), engine("e2")
    warm(e2, prompt(9))
    busy(e2, 3)
    maps = [item(prompt(9, own=k + 1), THR, task_group="g") for k in range(4)]
    mixed = [item(prompt(1), UNK), *maps, item(prompt(2), UNK)]
    ds = AppAwarePlacement().place(mixed, [e1, e2])
    assert names(ds)[1:5] == ["e2"] * 4
    assert all("common prefix 128 cached tokens" in d.reason for d in ds[1:5])
    assert ds[1].expected_cached_tokens == 128


def test_task_group_split_when_it_does_not_fit():
    e1, e2, e3 = engine("e1", slots=4), engine("e2", slots=4), engine("e3", slots=4)
    busy(e1, 2)
    busy(e3, 3)
    maps = [item(prompt(4, own=k), THR, task_group="big") for k in range(7)]
    ds = AppAwarePlacement().place(maps, [e1, e2, e3])
    # Most room first: e2 takes 4, then e1 takes 2, then e3 the last one.
    assert names(ds) == ["e2"] * 4 + ["e1"] * 2 + ["e3"]
    assert all("task group big split" in d.reason for d in ds)


def test_task_group_split_beyond_capacity_still_places_everything():
    e1, e2 = engine("e1", slots=2), engine("e2", slots=2)
    maps = [item(prompt(4, own=k), UNK, task_group="g") for k in range(6)]
    ds = AppAwarePlacement().place(maps, [e1, e2])
    assert len(ds) == 6 and names(ds)[:4].count("e1") == 2
    assert all("all engines overloaded" in d.reason for d in ds[4:])


def test_task_groups_are_per_model():
    engines = [engine("a1", "a"), engine("b1", "b")]
    ds = AppAwarePlacement().place(
        [item(range(40), task_group="g", model=m) for m in ("a", "b", "a", "b")], engines
    )
    assert names(ds) == ["a1", "b1", "a1", "b1"]


# -- objectives ----------------------------------------------------------------------------------
def test_latency_goes_where_the_batch_is_small():
    e1, e2 = engine("e1"), engine("e2")
    busy(e1, 5, LAT)
    busy(e2, 1, LAT)
    (d,) = AppAwarePlacement().place([item(range(64), LAT)], [e1, e2])
    assert d.engine == "e2" and d.reason.startswith("latency: smallest batch")


def test_latency_avoids_engines_packed_with_throughput_work():
    e1, e2 = engine("e1"), engine("e2")
    busy(e1, 2, THR)
    busy(e2, 4, LAT)
    (d,) = AppAwarePlacement().place([item(range(64), LAT)], [e1, e2])
    assert d.engine == "e2"
    busy(e2, 4, LAT)  # 8 running: at the latency batch limit, the throughput engine is better
    (d,) = AppAwarePlacement().place([item(range(64), LAT)], [e1, e2])
    assert d.engine == "e1"


def test_throughput_is_packed():
    e1, e2, e3 = engine("e1", slots=5), engine("e2", slots=5), engine("e3", slots=5)
    busy(e2, 2, THR)
    ds = AppAwarePlacement().place(
        [item(range(k * 100, k * 100 + 64), THR) for k in range(6)], [e1, e2, e3]
    )
    # The most loaded engine that fits takes them until it is full, then the next.
    assert names(ds) == ["e2", "e2", "e2", "e1", "e1", "e1"]
    assert ds[0].reason.startswith("throughput: packed")


def test_throughput_avoids_engines_running_latency_work():
    e1, e2 = engine("e1"), engine("e2")
    busy(e1, 3, LAT)
    (d,) = AppAwarePlacement().place([item(range(64), THR)], [e1, e2])
    assert d.engine == "e2"


def test_latency_skips_a_busy_affinity_engine_but_throughput_does_not():
    e1, e2 = engine("e1"), engine("e2")
    warm(e2, prompt(5))
    busy(e2, 8, LAT)
    (lat,) = AppAwarePlacement().place([item(prompt(5, own=1), LAT)], [e1, e2])
    assert lat.engine == "e1"
    assert "prefix (128 tokens) on e2 skipped: batch >= 8" in lat.reason
    (thr,) = AppAwarePlacement().place([item(prompt(5, own=1), THR)], [e1, e2])
    assert thr.engine == "e2" and "prefix affinity" in thr.reason
    # No lighter engine: affinity wins again.
    busy(e1, 9, LAT)
    (lat,) = AppAwarePlacement().place([item(prompt(5, own=1), LAT)], [e1, e2])
    assert lat.engine == "e2" and "prefix affinity" in lat.reason
    # A larger limit keeps the latency item on its prefix.
    (lat,) = AppAwarePlacement(latency_batch_limit=16).place([item(prompt(5, own=2), LAT)], [e2])
    assert lat.engine == "e2"


def test_unknown_objective_goes_to_the_least_loaded():
    e1, e2 = engine("e1", kv=10_000), engine("e2", kv=1_000)
    busy(e1, 2, tokens=1000)  # 20% of e1's pool
    busy(e2, 1, tokens=500)  # 50% of e2's pool: fewer tokens, but fuller
    (d,) = AppAwarePlacement().place([item(range(64))], [e1, e2])
    assert d.engine == "e1" and d.reason.startswith("least loaded")


def test_latency_and_throughput_work_stay_apart_over_many_batches():
    engines = [engine("e1", slots=16), engine("e2", slots=16), engine("e3", slots=16)]
    policy = AppAwarePlacement()
    running: list[tuple[PlacementItem, str]] = []
    by_name = {e.name: e for e in engines}
    for rnd in range(12):
        # A map-reduce app submits throughput maps; chat apps submit latency calls.
        maps = [item(prompt(100 + rnd, n_prefix=32, own=k), THR) for k in range(3)]
        chats = [item(prompt(200 + rnd % 3, own=rnd), LAT) for _ in range(2)]
        for batch in (maps, chats):
            ds = run(policy, batch, engines)
            running += [(it, d.engine) for it, d in zip(batch, ds, strict=True)]
        # Both kinds never share an engine while both are running.
        for e in engines:
            assert not (e.running_latency and e.running_throughput), (rnd, e)
        # Half of what runs finishes (oldest first).
        for it, name in running[: len(running) // 2]:
            by_name[name].finish(it)
        running = running[len(running) // 2 :]
    assert sum(e.running for e in engines) == len(running)


def test_everything_overloaded_still_places_on_the_least_loaded():
    e1, e2 = engine("e1", slots=2), engine("e2", slots=2)
    busy(e1, 3)
    busy(e2, 2)
    ds = AppAwarePlacement().place([item(range(64), p) for p in (LAT, UNK, THR)], [e1, e2])
    assert names(ds) == ["e2", "e2", "e1"]  # e2 takes two: fewer slots over, then fewer tokens
    assert all(d.reason.startswith("all engines overloaded: least loaded") for d in ds)


# -- baselines and policy enum -------------------------------------------------------------------
def test_round_robin_cycles_over_healthy_engines():
    engines = [engine("e1"), engine("e2", healthy=False), engine("e3")]
    warm(engines[2], prompt(1))
    p = RoundRobinPlacement()
    ds = p.place([item(prompt(1, own=2)) for _ in range(3)], engines)
    assert names(ds) == ["e1", "e3", "e1"]
    assert names(p.place([item(range(5))], engines)) == ["e3"]  # the turn carries over
    assert all(d.reason.startswith("round-robin: ") for d in ds)
    assert ds[1].expected_cached_tokens == 128


def test_least_loaded_spreads_a_batch_and_ignores_the_cache():
    e1, e2 = engine("e1"), engine("e2")
    warm(e2, prompt(1))
    busy(e2, 1)
    ds = LeastLoadedPlacement().place([item(prompt(1, own=k)) for k in range(4)], [e1, e2])
    assert names(ds) == ["e1", "e2", "e1", "e2"]  # projected load counts within the batch
    assert all(d.reason.startswith("least loaded: ") for d in ds)


def test_policy_enum_creates_each_policy():
    assert isinstance(PlacementPolicy("app-aware").create(), AppAwarePlacement)
    assert isinstance(PlacementPolicy.ROUND_ROBIN.create(), RoundRobinPlacement)
    assert isinstance(PlacementPolicy.LEAST_LOADED.create(), LeastLoadedPlacement)
    p = PlacementPolicy.APP_AWARE.create(latency_batch_limit=4, high_watermark=0.5)
    assert (p.latency_batch_limit, p.high_watermark, p.min_affinity_tokens) == (4, 0.5, 32)
    assert str(PlacementPolicy.LEAST_LOADED) == "least-loaded"
    with pytest.raises(ValueError):
        AppAwarePlacement(min_affinity_tokens=0)


# -- properties ----------------------------------------------------------------------------------
engine_specs = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),  # model
        st.booleans(),  # healthy
        st.integers(0, 6),  # running
        st.integers(1, 6),  # slots
    ),
    min_size=1,
    max_size=5,
)
item_specs = st.lists(
    st.tuples(
        st.sampled_from([None, "a", "b"]),
        st.integers(0, 2),  # priority
        st.sampled_from([None, "g1", "g2"]),
        st.integers(0, 3),  # which shared prefix
        st.integers(0, 80),  # own tokens
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(engine_specs, item_specs, st.sampled_from(list(PlacementPolicy)))
def test_one_decision_per_item_on_a_healthy_engine_of_its_model(especs, ispecs, policy):
    engines = []
    for k, (model, healthy, n, slots) in enumerate(especs):
        e = engine(f"e{k}", model, kv=4000, slots=slots, healthy=healthy)
        busy(e, n, priority=k % 3)
        if k % 2:
            warm(e, prompt(k % 4))
        engines.append(e)
    items = [
        item(prompt(pre, n_own=own), prio, model=model, task_group=g)
        for model, prio, g, pre, own in ispecs
    ]
    healthy = {e.name: e for e in engines if e.healthy}
    servable = all(any(it.model in (None, e.model) for e in healthy.values()) for it in items)
    if not servable:
        with pytest.raises(NoEngineError):
            policy.create().place(items, engines)
        return
    ds = policy.create().place(items, engines)
    assert [d.rid for d in ds] == [it.rid for it in items]
    for it, d in zip(items, ds, strict=True):
        e = healthy[d.engine]
        assert it.model in (None, e.model)
        assert d.reason
        assert 0 <= d.expected_cached_tokens <= len(it.prompt_ids)
