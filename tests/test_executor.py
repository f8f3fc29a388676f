"""The ServeCore executor over the real embedded engine, in process (no HTTP): a task group is
admitted into the same engine steps, and objectives reach the engine as priorities."""

from __future__ import annotations

import asyncio

import pytest

from parrot_integrations.protocol.native import CallSpec, OutputBinding, Program, VariableCreate
from parrot_server.core.engine_client import LocalEngineClient
from parrot_server.core.serve_core import ServeCore
from parrot_server.core.tenants import DEFAULT_TENANT
from parrot_server.engine.async_engine import AsyncEngine
from parrot_server.engine.config import EngineConfig
from parrot_server.engine.engine import Engine
from parrot_server.native_service import NativeService

TOKENS = 4


@pytest.fixture
async def service(loaded_model):
    engine = AsyncEngine(
        lambda: Engine(EngineConfig(kv_pool_tokens=4096, max_context_len=1024), loaded_model)
    )
    core = ServeCore(LocalEngineClient(engine))
    await core.start()
    yield NativeService(core)
    await core.shutdown()


def map_call(k: int) -> CallSpec:
    sampling = {"max_tokens": TOKENS, "temperature": 0, "ignore_eos": True}
    return CallSpec(
        id=f"m{k}",
        template="Note: {{input:doc}}\nSummary: {{output:s}}",
        inputs={"doc": f"doc{k}"},
        outputs={"s": OutputBinding(var=f"s{k}", sampling=sampling)},
    )


async def test_maps_of_a_task_group_share_engine_steps(service):
    # AsyncEngine.stats runs on the engine thread, after the step in flight has counted itself
    # (the raw engine's counter is read racily: outputs reach us before the step ends).
    engine = service.core.engine.engine
    program = Program(
        variables=[
            VariableCreate(id=f"doc{k}", value=f"item {k} costs {k} coins") for k in range(6)
        ],
        calls=[map_call(k) for k in range(6)],
    )
    before = (await engine.stats()).steps_total
    sid = service.create_session(DEFAULT_TENANT, None).session_id
    await service.submit(DEFAULT_TENANT, sid, program)
    states = [await service.get_variable(DEFAULT_TENANT, sid, f"s{k}", None, 60) for k in range(6)]
    assert all(s.status == "ready" for s in states)
    # Started together (one engine command), the six maps prefill in one step and decode in
    # lockstep: TOKENS steps in all. An executor that ran them one after another, or let the
    # engine start a step between their submissions, would take more steps.
    assert (await engine.stats()).steps_total - before == TOKENS


async def test_latency_get_moves_queued_calls_first(service):
    """With one call in flight at a time, a LATENCY get on the last-submitted app makes it run
    before the earlier throughput app's calls."""
    service.core.executor.max_inflight = 1
    sid = service.create_session(DEFAULT_TENANT, None).session_id
    order: list[str] = []
    docs = [VariableCreate(id=f"doc{k}", value=f"item {k}") for k in range(4)]
    await service.submit(
        DEFAULT_TENANT, sid, Program(variables=docs, calls=[map_call(k) for k in range(4)])
    )
    service._read_with(service.sessions.get(sid), "s3", "latency")  # what GET ?criteria= does

    async def watch(k: int) -> None:
        await service.get_variable(DEFAULT_TENANT, sid, f"s{k}", None, 60)
        order.append(f"s{k}")

    await asyncio.gather(*(watch(k) for k in range(4)))
    assert order[0] in ("s0", "s3")  # s0 may already be running when the get arrives
    assert order.index("s3") <= 1


async def test_a_call_cancelled_before_its_task_ran_frees_its_slot(service):
    sid = service.create_session(DEFAULT_TENANT, None).session_id
    doc = [VariableCreate(id="doc0", value="x")]
    await service.submit(DEFAULT_TENANT, sid, Program(variables=doc, calls=[map_call(0)]))
    await asyncio.sleep(0)  # the pump has created the call's task; it has not run yet
    executor = service.executor
    assert executor.running == 1
    service.close_session(DEFAULT_TENANT, sid)
    await asyncio.sleep(0.05)
    assert executor.running == 0  # the slot is free again


async def _finish_order(service, sid_vars: list[tuple[str, str]]) -> list[str]:
    order: list[str] = []

    async def watch(sid: str, var: str) -> None:
        state = await service.get_variable(DEFAULT_TENANT, sid, var, None, 120)
        assert state.status == "ready"
        order.append(var)

    await asyncio.gather(*(watch(sid, v) for sid, v in sid_vars))
    return order


async def test_interleaved_apps_both_make_progress(service):
    """One call in flight at a time; app A queues four calls, then app B one. B joins the
    round-robin behind A (A was served before B arrived) and runs right after A's next call,
    not after all of A's (FIFO would make it last)."""
    service.core.executor.max_inflight = 1
    a = service.create_session(DEFAULT_TENANT, None).session_id
    b = service.create_session(DEFAULT_TENANT, None).session_id
    docs = [VariableCreate(id=f"doc{k}", value=f"item {k}") for k in range(5)]
    await service.submit(
        DEFAULT_TENANT, a, Program(variables=docs[:4], calls=[map_call(k) for k in range(4)])
    )
    await service.submit(DEFAULT_TENANT, b, Program(variables=[docs[4]], calls=[map_call(4)]))
    order = await _finish_order(service, [(a, f"s{k}") for k in range(4)] + [(b, "s4")])
    assert order.index("s4") <= 2, order


async def test_deeper_calls_of_an_app_run_first(service):
    """A chain's second step (depth 1) runs before independent calls (depth 0) queued earlier:
    it brings its app closer to the end."""
    service.core.executor.max_inflight = 1
    sid = service.create_session(DEFAULT_TENANT, None).session_id
    docs = [VariableCreate(id=f"doc{k}", value=f"item {k}") for k in range(4)]
    step2 = CallSpec(
        id="step2",
        template="Again: {{input:prev}}\nShorter: {{output:out}}",
        inputs={"prev": "s0"},
        outputs={
            "out": OutputBinding(var="s0b", sampling={"max_tokens": TOKENS, "temperature": 0})
        },
    )
    calls = [map_call(k) for k in range(4)] + [step2]
    await service.submit(DEFAULT_TENANT, sid, Program(variables=docs, calls=calls))
    order = await _finish_order(service, [(sid, v) for v in ("s0", "s1", "s2", "s3", "s0b")])
    assert order[:2] == ["s0", "s0b"], order


async def test_each_prompt_is_tokenized_once(service):
    """A native program's prompts and a /v1 request's are tokenized once each on their way to
    the engine: measured at submit (a call whose inputs are known), or rendered when the inputs
    arrive, and then handed over as ids (the engine does not tokenize them again)."""
    from parrot_integrations.protocol.openai import ChatCompletionRequest
    from parrot_server.openai_service import OpenAIService

    tokens = service.core.engine.engine.tokens  # the engine's TokenizerThread
    sid = service.create_session(DEFAULT_TENANT, None).session_id
    sampling = {"max_tokens": TOKENS, "temperature": 0, "ignore_eos": True}
    first = CallSpec(
        id="first",
        template="Q: {{input:q}}\nA: {{output:a}}\nAgain: {{output:b}}",
        inputs={"q": "q"},
        outputs={
            "a": OutputBinding(var="a", sampling=sampling),
            "b": OutputBinding(var="b", sampling={**sampling, "max_tokens": None}),
        },
        chat=True,
    )
    second = CallSpec(
        id="second",
        template="Shorter: {{input:a}}\n{{output:c}}",
        inputs={"a": "a"},
        outputs={"c": OutputBinding(var="c", sampling=sampling)},
    )
    before = tokens.texts_encoded
    program = Program(variables=[VariableCreate(id="q", value="why?")], calls=[first, second])
    await service.submit(DEFAULT_TENANT, sid, program)
    for var in ("b", "c"):
        assert (await service.get_variable(DEFAULT_TENANT, sid, var, None, 60)).status == "ready"
    assert tokens.texts_encoded - before == 3  # one per output: a, b (with a in it), c

    openai = OpenAIService(service.core.engine, service.core.metrics)
    before = tokens.texts_encoded
    req = ChatCompletionRequest(
        model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert (await openai.chat(req)).choices[0].message.content is not None
    await openai.chat(req.model_copy(update={"max_tokens": None, "stop": ["."]}))
    assert tokens.texts_encoded - before == 2


@pytest.mark.parametrize("chat", [True, False])
async def test_a_v1_stream_closed_before_its_first_event_aborts_its_requests(service, chat):
    """The HTTP layer closes a stream whose client left before the first event was sent: the
    event generator never started, yet its engine requests (submitted already) must end."""
    from parrot_integrations.protocol.openai import ChatCompletionRequest, CompletionRequest
    from parrot_server.openai_service import OpenAIService

    openai = OpenAIService(service.core.engine, service.core.metrics)
    engine = service.core.engine.engine
    fields = {"model": "default", "max_tokens": 500, "ignore_eos": True, "stream": True, "n": 2}
    if chat:
        req = ChatCompletionRequest(messages=[{"role": "user", "content": "Once"}], **fields)
        events = await openai.chat_stream(req)
    else:
        events = await openai.completion_stream(CompletionRequest(prompt="Once", **fields))
    assert (await engine.stats()).running_requests + (await engine.stats()).waiting_requests == 2
    await events.aclose()
    await asyncio.sleep(0.2)
    stats = await engine.stats()
    assert stats.running_requests + stats.waiting_requests == 0
