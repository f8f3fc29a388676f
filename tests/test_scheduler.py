"""Scheduler on hand-built requests: chunking, priorities, prefix reuse, preemption (no model)."""

import pytest

from parrot_server.engine.config import EngineConfig
from parrot_server.engine.errors import EngineOverloadedError, InvalidRequestError
from parrot_server.engine.kv_allocator import KVSlotAllocator
from parrot_server.engine.radix_cache import RadixCache
from parrot_server.engine.request import Request, RequestStatus
from parrot_server.engine.sampling_params import SamplingParams
from parrot_server.engine.scheduler import Scheduler


def make(pool=64, step=16, running=8, queued=100):
    cfg = EngineConfig(
        kv_pool_tokens=pool,
        max_step_tokens=step,
        max_running_requests=running,
        max_queued_requests=queued,
    )
    return Scheduler(cfg, KVSlotAllocator(pool), RadixCache())


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
    assert lo.num_preemptions >= 1 and lo.status is RequestStatus.WAITING
    assert hi.status is RequestStatus.RUNNING
    assert len(lo.output_ids) >= 1  # keeps what it generated
    s.finish(hi)
    for _ in range(3):
        fake_step(s)
    assert lo.status is RequestStatus.RUNNING


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
