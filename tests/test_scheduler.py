"""Scheduler on hand-built requests: chunking, priorities, prefix reuse, preemption (no model)."""

import time

import pytest

from parrot_server.engine.config import EngineConfig
from parrot_server.engine.errors import EngineOverloadedError, InvalidRequestError
from parrot_server.engine.kv_allocator import KVSlotAllocator
from parrot_server.engine.radix_cache import RadixCache
from parrot_server.engine.request import Request, RequestStatus
from parrot_server.engine.sampling_params import SamplingParams
from parrot_server.engine.scheduler import URGENT_LINGER_SECONDS, Scheduler


def make(
    pool=64, step=16, running=8, queued=100, wait=32, pause=0, short=128, clock=time.monotonic
):
    cfg = EngineConfig(
        kv_pool_tokens=pool,
        max_step_tokens=step,
        max_running_requests=running,
        max_queued_requests=queued,
        prefix_wait_min_tokens=wait,
        background_pause_steps=pause,
        background_step_tokens=short,
    )
    return Scheduler(cfg, KVSlotAllocator(pool), RadixCache(), clock)


def req(rid, n, max_new=4, priority=0, start=0):
    return Request(
        rid,
        list(range(start, start + n)),
        SamplingParams(max_new_tokens=max_new),
        priority=priority,
    )


def fake_step(s, token=99):
    """What the engine does after the model ran: commit, append a token to sampled chunks."""
    batch = s.schedule()
    s.commit(batch)
    for c in batch.chunks:
        if c.sample:
            c.request.output_ids.append(token)
    return batch


def test_prompt_is_chunked_then_decoded():
    s = make(step=16)
    r = req("a", 40)
    s.add(r)
    sizes = [fake_step(s).chunks[0].length for _ in range(4)]
    assert sizes == [16, 16, 8, 1]
    assert r.num_computed == 41 and len(r.output_ids) == 2


def test_priority_orders_admission_and_budget():
    s = make(step=8)
    low, high = req("low", 8), req("high", 8, priority=5)
    s.add(low)
    s.add(high)
    batch = fake_step(s)
    assert [c.request.rid for c in batch.chunks] == ["high"]


def test_urgent_work_runs_in_steps_of_its_own_while_background_waits():
    s = make(pool=256, step=16, pause=64)
    batch_job = req("batch", 100, priority=0)
    s.add(batch_job)
    assert fake_step(s).chunks[0].length == 16  # alone: the whole step
    chat = req("chat", 10, priority=2, start=500)
    s.add(chat)
    # The chat is admitted at once and prefills and decodes alone: on a CPU every token in a
    # step slows it down.
    assert [(c.request.rid, c.length) for c in fake_step(s).chunks] == [("chat", 10)]
    assert [(c.request.rid, c.length) for c in fake_step(s).chunks] == [("chat", 1)]
    assert batch_job.num_computed == 16  # waited, its KV kept
    s.finish(chat)
    assert [(c.request.rid, c.length) for c in fake_step(s).chunks] == [("batch", 16)]


@pytest.mark.parametrize("short", [4, 0])
def test_background_steps_stay_short_for_a_moment_after_urgent_work(short):
    """A chat's next turn usually follows its last at once: for `URGENT_LINGER_SECONDS` after
    it, the background computes short steps, whose layers the next turn waits for."""
    clock = [100.0]
    s = make(pool=256, step=16, pause=64, short=short, clock=lambda: clock[0])
    batch_job = req("batch", 100, priority=0)
    s.add(batch_job)
    assert fake_step(s).chunks[0].length == 16  # nothing urgent seen yet: the whole step
    chat = req("chat", 10, priority=2, start=500)
    s.add(chat)
    assert [c.request.rid for c in fake_step(s).chunks] == ["chat"]
    s.finish(chat)
    clock[0] += 0.5
    assert fake_step(s).chunks[0].length == (short or 16)  # the chat was served just now
    clock[0] += URGENT_LINGER_SECONDS
    assert fake_step(s).chunks[0].length == 16  # long enough ago: whole steps again
    same = req("same", 10, priority=0, start=700)  # as urgent as the batch: no reason
    s.add(same)
    assert sum(c.length for c in fake_step(s).chunks) == 16


def test_background_waits_a_bounded_number_of_steps_in_a_row():
    s = make(pool=256, step=16, pause=3)
    s.add(req("batch", 100, priority=0))
    fake_step(s)
    s.add(req("chat", 10, priority=2, start=500, max_new=50))
    batches = [fake_step(s) for _ in range(8)]
    served = [[c.request.rid for c in b.chunks] for b in batches]
    # Every fourth step is the background's turn, of its own (the engine runs a slice of it).
    assert served == ([["chat"]] * 3 + [["batch"]]) * 2
    assert [b.turn for b in batches] == ([False] * 3 + [True]) * 2


def test_an_urgent_request_waiting_for_a_background_prefill_does_not_stall_it():
    """A chat whose prompt shares a prefix with a background prompt being prefilled waits for
    that prefix; the background prefill is not paused for a request that is not running."""
    s = make(pool=256, step=16, pause=64, wait=4)
    s.add(req("batch", 60, priority=0))
    fake_step(s)
    s.add(req("chat", 40, priority=2))  # shares the batch prompt's first 40 tokens
    served = [[c.request.rid for c in fake_step(s).chunks] for _ in range(4)]
    # The batch computes the shared prefix (16 tokens a step) while the chat waits for it;
    # then the chat runs and the batch waits.
    assert served == [["batch"], ["batch"], ["chat"], ["chat"]]


def test_without_a_pause_the_step_is_shared_in_priority_order():
    s = make(pool=256, step=16, pause=0)
    s.add(req("batch", 100, priority=0))
    fake_step(s)
    s.add(req("chat", 10, priority=2, start=500))
    assert [(c.request.rid, c.length) for c in fake_step(s).chunks] == [("chat", 10), ("batch", 6)]
    s = make(pool=256, step=16, pause=64)
    s.add(req("a", 100, priority=1))
    fake_step(s)
    s.add(req("b", 10, priority=1, start=500))  # same priority: nobody waits
    assert [(c.request.rid, c.length) for c in fake_step(s).chunks] == [("a", 16)]


def test_second_request_reuses_cached_prefix():
    s = make(pool=64, step=64)
    first = req("a", 20)
    s.add(first)
    fake_step(s)
    s.finish(first)
    second = Request("b", list(range(20)) + [500, 501], SamplingParams(max_new_tokens=1))
    s.add(second)
    batch = fake_step(s)
    assert second.num_cached == 20
    assert batch.chunks[0].start == 20 and batch.chunks[0].length == 2


def test_fully_cached_fill_completes_without_compute():
    s = make()
    a = Request("a", [1, 2, 3], SamplingParams(), prefill_only=True)
    s.add(a)
    fake_step(s)
    s.finish(a)
    b = Request("b", [1, 2, 3], SamplingParams(), prefill_only=True)
    s.add(b)
    batch = s.schedule()
    assert batch.chunks == [] and batch.completed == [b]


def test_kv_exhaustion_preempts_lowest_priority_and_resumes():
    s = make(pool=24, step=64)
    hi, lo = req("hi", 10, max_new=50, priority=1), req("lo", 10, max_new=50, start=100)
    s.add(hi)
    s.add(lo)
    fake_step(s)  # both prefilled: 20 slots used
    for _ in range(6):
        fake_step(s)
    # (Its prompt stays cached apart from its output, so it may be back already.)
    assert lo.num_preemptions >= 1 and hi.num_preemptions == 0
    assert hi.status is RequestStatus.RUNNING
    assert len(lo.output_ids) >= 1  # keeps what it generated
    s.finish(hi)
    for _ in range(3):
        fake_step(s)
    assert lo.status is RequestStatus.RUNNING


def test_admission_never_evicts_the_prefix_it_matched():
    s = make(pool=24, step=64)
    a = req("a", 10, max_new=1)
    s.add(a)
    fake_step(s)
    s.finish(a)  # its 10 prompt tokens stay cached, unlocked
    b = req("b", 12, max_new=50, start=100)
    s.add(b)
    fake_step(s)  # 2 slots left free
    c = Request("c", list(range(10)) + [200, 201, 202, 203, 204], SamplingParams(max_new_tokens=1))
    s.add(c)
    fake_step(s)
    # Room for c's 5 new tokens could only come from evicting the 10 it matched: it waits.
    assert c.status is RequestStatus.WAITING
    assert s.cache.match(None, list(range(10))).length == 10


def _prompt_tokens_computed(batches) -> int:
    return sum(c.length for b in batches for c in b.chunks if c.start < len(c.request.prompt_ids))


def test_requests_arriving_together_compute_their_common_prefix_once():
    s = make(pool=256, step=16, wait=1)
    shared = list(range(40))
    reqs = [
        Request(f"r{i}", shared + [1000 + i, 2000 + i], SamplingParams(max_new_tokens=2))
        for i in range(3)
    ]
    for r in reqs:
        s.add(r)
    batches = [fake_step(s) for _ in range(6)]
    # The first computes the 40 shared tokens (in 16-token chunks); the others wait for them,
    # then compute only their own two tokens each.
    assert [c.request.rid for c in batches[0].chunks] == ["r0"]
    assert _prompt_tokens_computed(batches) == 42 + 2 * 2
    assert [r.num_cached for r in reqs] == [0, 40, 40]
    assert all(len(r.output_ids) >= 1 for r in reqs)
    # The cached prompt is locked while its request runs: eviction cannot take it.
    assert s.cache.evict(1000) == [] or all(r.status is not RequestStatus.RUNNING for r in reqs)


def test_other_namespaces_and_short_overlaps_do_not_wait():
    s = make(pool=256, step=256, wait=16)
    shared = list(range(40))
    a = Request("a", shared + [1], SamplingParams(max_new_tokens=2), namespace="t1")
    b = Request("b", shared + [2], SamplingParams(max_new_tokens=2), namespace="t2")
    c = Request("c", shared[:8] + [3] * 30, SamplingParams(max_new_tokens=2), namespace="t1")
    for r in (a, b, c):
        s.add(r)
    batch = fake_step(s)
    assert sorted(ch.request.rid for ch in batch.chunks) == ["a", "b", "c"]
    # Nor does anyone when waiting is off.
    s = make(pool=256, step=256, wait=0)
    twins = [Request(f"t{i}", shared + [i], SamplingParams(max_new_tokens=2)) for i in range(2)]
    for r in twins:
        s.add(r)
    assert len(fake_step(s).chunks) == 2


def test_a_waiting_request_computes_the_rest_of_a_longer_prompt_itself():
    """It waits only for what the running prompt shares with it."""
    s = make(pool=256, step=16, wait=1)
    first = req("a", 20)
    second = Request("b", list(range(20)) + list(range(500, 540)), SamplingParams(max_new_tokens=1))
    s.add(first)
    s.add(second)
    batches = [fake_step(s) for _ in range(5)]
    assert second.num_cached == 20
    assert _prompt_tokens_computed(batches) == 20 + 40


def test_queue_limit_is_explicit():
    s = make(queued=2)
    s.add(req("a", 4))
    s.add(req("b", 4))
    with pytest.raises(EngineOverloadedError, match="queue is full"):
        s.add(req("c", 4))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(temperature=-0.5), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=0), "top_k"),
        (dict(stop=[""]), "stop"),
        (dict(stop_token_ids=[-3]), "stop_token_ids"),
    ],
)
def test_bad_sampling_params_are_typed_errors(kwargs, message):
    with pytest.raises(InvalidRequestError, match=message):
        SamplingParams(**kwargs)


def test_scheduling_code_never_imports_torch():
    import subprocess
    import sys

    code = (
        "import sys; import parrot_server.engine.scheduler, parrot_server.engine.radix_cache; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_batch_set_aside_is_skipped_until_committed_and_held_back_while_urgent_work_waits():
    s = make(step=16, pause=4)
    low = req("low", 12)
    s.add(low)
    batch = s.schedule()
    s.set_aside(batch)  # the engine stopped it between layers
    assert not s.holds_back(0)  # nothing more urgent: finish it
    high = req("high", 6, priority=5)
    s.add(high)
    assert s.holds_back(0)  # more urgent work waits
    urgent = s.schedule()
    assert [c.request.rid for c in urgent.chunks] == ["high"]  # low's slots are in use
    s.commit(urgent)
    assert s.holds_back(0)  # more urgent work runs
    for _ in range(3):
        assert s.holds_back(0)
        s.commit(s.schedule())
    assert not s.holds_back(0)  # it has waited background_pause_steps (4) steps in a row
    s.commit(batch)
    assert not low.set_aside and low.num_computed == 12
