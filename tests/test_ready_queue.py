"""ReadyQueue: priority classes, app round-robin, deepest-first, FIFO, re-push, remove."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parrot_server.core.ready_queue import ReadyQueue


def drain(q: ReadyQueue) -> list:
    out = []
    while q:
        out.append(q.pop())
    return out


def test_empty_pop_raises():
    q: ReadyQueue[str] = ReadyQueue()
    assert len(q) == 0 and "x" not in q
    with pytest.raises(IndexError):
        q.pop()


def test_higher_priority_class_first():
    q: ReadyQueue[str] = ReadyQueue()
    q.push("t", priority=0, app="a", depth=5)
    q.push("u", priority=1, app="a", depth=0)
    q.push("l", priority=2, app="b", depth=0)
    assert drain(q) == ["l", "u", "t"]


def test_fifo_within_app_and_depth():
    q: ReadyQueue[int] = ReadyQueue()
    for k in range(5):
        q.push(k, priority=1, app="a", depth=0)
    assert drain(q) == [0, 1, 2, 3, 4]


def test_deepest_first_within_app():
    q: ReadyQueue[str] = ReadyQueue()
    q.push("map1", priority=1, app="a", depth=0)
    q.push("reduce-level2", priority=1, app="a", depth=2)
    q.push("map2", priority=1, app="a", depth=0)
    q.push("reduce-level1", priority=1, app="a", depth=1)
    assert drain(q) == ["reduce-level2", "reduce-level1", "map1", "map2"]


def test_round_robin_over_apps():
    q: ReadyQueue[str] = ReadyQueue()
    for k in range(4):  # app a's fan-out arrives first
        q.push(f"a{k}", priority=1, app="a", depth=0)
    q.push("b0", priority=1, app="b", depth=0)
    q.push("b1", priority=1, app="b", depth=0)
    q.push("c0", priority=1, app="c", depth=0)
    assert drain(q) == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]


def test_app_served_least_recently_goes_next():
    q: ReadyQueue[str] = ReadyQueue()
    q.push("chain0", priority=1, app="chain", depth=0)
    assert q.pop() == "chain0"
    for k in range(3):
        q.push(f"fan{k}", priority=1, app="mapper", depth=0)
    assert q.pop() == "fan0"
    # The chain's next step becomes ready: the chain was served longer ago than the mapper.
    q.push("chain1", priority=1, app="chain", depth=1)
    assert q.pop() == "chain1"
    q.push("chain2", priority=1, app="chain", depth=2)
    assert q.pop() == "fan1"  # now the mapper was served longer ago
    assert q.pop() == "chain2"
    assert q.pop() == "fan2"


def test_new_apps_join_at_the_back_so_a_flood_cannot_starve_a_waiting_app():
    q: ReadyQueue[str] = ReadyQueue()
    q.push("old0", priority=1, app="old", depth=0)
    q.push("old1", priority=1, app="old", depth=0)
    q.push("new0", priority=1, app="new0", depth=0)
    assert q.pop() == "old0"
    for k in range(1, 4):  # fresh apps keep arriving
        q.push(f"new{k}", priority=1, app=f"new{k}", depth=0)
    assert q.pop() == "new0"
    assert q.pop() == "old1"


def test_forgotten_apps_are_treated_as_new():
    q: ReadyQueue[str] = ReadyQueue(remember_apps=1)
    q.push("a0", priority=1, app="a", depth=0)
    assert q.pop() == "a0"
    q.push("b0", priority=1, app="b", depth=0)
    q.push("b1", priority=1, app="b", depth=0)
    assert q.pop() == "b0"  # "a" is forgotten now: only b's last service is remembered
    q.push("a1", priority=1, app="a", depth=0)
    assert q.pop() == "b1"  # a joined after b's service: a new app, at the back
    assert q.pop() == "a1"


def test_round_robin_is_per_priority_class():
    q: ReadyQueue[str] = ReadyQueue()
    q.push("a-lat", priority=2, app="a", depth=0)
    q.push("a-thr", priority=0, app="a", depth=0)
    q.push("b-thr", priority=0, app="b", depth=0)
    assert drain(q) == ["a-lat", "a-thr", "b-thr"]


def test_app_none_items_are_apps_of_their_own():
    q: ReadyQueue[str] = ReadyQueue()
    for k in range(3):
        q.push(f"a{k}", priority=1, app="a", depth=0)
    q.push("lone1", priority=1, app=None, depth=0)
    q.push("lone2", priority=1, app=None, depth=0)
    # Each lone item takes one turn in the rotation, like a one-call app.
    assert drain(q) == ["a0", "lone1", "lone2", "a1", "a2"]


def test_re_push_re_prioritises_and_keeps_arrival_order():
    q: ReadyQueue[str] = ReadyQueue()
    q.push("x", priority=0, app="a", depth=0)
    q.push("y", priority=0, app="a", depth=0)
    q.push("z", priority=2, app="b", depth=0)
    q.push("w", priority=2, app="b", depth=0)
    q.push("y", priority=2, app="b", depth=0)  # a latency get marked y's chain
    assert len(q) == 4
    # y arrived before z and w, so it leads app b's latency items.
    assert drain(q) == ["y", "z", "w", "x"]


def test_re_push_same_place_is_a_no_op_and_depth_change_moves_within_app():
    q: ReadyQueue[str] = ReadyQueue()
    q.push("a", priority=1, app="s", depth=0)
    q.push("b", priority=1, app="s", depth=0)
    q.push("a", priority=1, app="s", depth=0)
    assert len(q) == 2
    q.push("b", priority=1, app="s", depth=3)
    assert drain(q) == ["b", "a"]


def test_re_push_keeps_the_apps_turn():
    q: ReadyQueue[str] = ReadyQueue()
    q.push("a0", priority=1, app="a", depth=0)
    q.push("b0", priority=1, app="b", depth=0)
    q.push("a0", priority=1, app="a", depth=1)  # same class, same app: a stays in front
    assert drain(q) == ["a0", "b0"]


def test_re_push_to_another_app():
    q: ReadyQueue[str] = ReadyQueue()
    q.push("x", priority=1, app="a", depth=0)
    q.push("x", priority=1, app="b", depth=0)
    q.push("y", priority=1, app="a", depth=0)
    assert len(q) == 2 and q.counts() == {1: 2}
    assert drain(q) == ["x", "y"]


def test_remove():
    q: ReadyQueue[str] = ReadyQueue()
    q.push("a", priority=1, app="s", depth=0)
    q.push("b", priority=1, app="s", depth=0)
    q.push("c", priority=2, app="t", depth=0)
    assert q.remove("a") is True
    assert q.remove("a") is False
    assert q.remove("nope") is False
    assert "a" not in q and "b" in q and len(q) == 2
    assert q.remove("c") is True
    assert q.counts() == {1: 1}
    assert drain(q) == ["b"]
    assert q.counts() == {} and "0 items" in repr(q)


def test_pushing_again_after_pop_queues_anew():
    q: ReadyQueue[str] = ReadyQueue()
    q.push("a", priority=1, app="s", depth=0)
    assert q.pop() == "a"
    q.push("a", priority=0, app="s", depth=0)
    assert q.pop() == "a" and len(q) == 0


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            st.integers(0, 15),  # item
            st.integers(0, 2),  # priority
            st.sampled_from(["a", "b", "c", None]),
            st.integers(0, 3),  # depth
        ),
        st.tuples(st.just("remove"), st.integers(0, 15)),
        st.tuples(st.just("pop")),
    ),
    max_size=80,
)


@given(ops)
def test_every_queued_item_pops_exactly_once_and_classes_come_in_order(script):
    q: ReadyQueue[int] = ReadyQueue()
    model: dict[int, int] = {}  # queued item -> priority
    for op in script:
        if op[0] == "push":
            _, item, prio, app, depth = op
            q.push(item, priority=prio, app=app, depth=depth)
            model[item] = prio
        elif op[0] == "remove":
            assert q.remove(op[1]) == (model.pop(op[1], None) is not None)
        elif model:
            item = q.pop()
            assert model[item] == max(model.values())  # never a lower class first
            del model[item]
        assert len(q) == len(model)
        assert all(i in q for i in model)
        assert sum(q.counts().values()) == len(model)
    popped = drain(q)
    assert sorted(popped) == sorted(model)


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3)),
        min_size=1,
        max_size=40,
    )
)
def test_within_an_app_deepest_first_then_fifo_and_apps_alternate(pushes):
    q: ReadyQueue[int] = ReadyQueue()
    for k, (app, depth) in enumerate(pushes):
        q.push(k, priority=1, app=app, depth=depth)
    order = drain(q)
    by_app: dict[str, list[int]] = {}
    for k in order:
        by_app.setdefault(pushes[k][0], []).append(k)
    for ks in by_app.values():
        keys = [(-pushes[k][1], k) for k in ks]
        assert keys == sorted(keys)
    # Round-robin: while two apps both have items left, neither is served twice in a row.
    left = {app: len(ks) for app, ks in by_app.items()}
    for prev, cur in zip(order, order[1:], strict=False):
        left[pushes[prev][0]] -= 1
        if pushes[prev][0] == pushes[cur][0]:
            assert sum(1 for n in left.values() if n) == 1
