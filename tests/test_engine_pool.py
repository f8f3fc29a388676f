"""`EnginePool` in process over real `parrot engine` subprocesses: when no engine is left, a
request fails with a clear error after `failover_wait` instead of waiting forever; an abort
through the pool stops the request on its engine; a constrained request whose engine dies
resumes on the other under its grammar."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from functools import partial

import httpx
import jsonschema
import pytest

from parrot_server.core.engine_pool import EnginePool, PoolConfig
from parrot_server.core.placement import PlacementPolicy
from parrot_server.core.remote_engine import RemoteEngineClient
from parrot_server.engine.errors import EngineUnavailableError
from parrot_server.engine.request import FinishKind
from parrot_server.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.slow

LONG = SamplingParams(max_new_tokens=400, temperature=0, ignore_eos=True)


def _engine(parrot_process, name: str):
    return parrot_process(
        ["engine", "--kv-pool-tokens", "2048", "--max-context-len", "1024", "--threads", "1"], name
    ).wait_healthy()


async def _pool(*urls: str, failover_wait: float = 60.0) -> EnginePool:
    pool = EnginePool(
        [(u, partial(RemoteEngineClient.connect, u)) for u in urls],
        PlacementPolicy.APP_AWARE.create(),
        PoolConfig(health_interval=0.25, failover_wait=failover_wait),
    )
    await pool.start()
    return pool


async def test_a_request_fails_cleanly_when_no_engine_is_left(parrot_process):
    engine = _engine(parrot_process, "lonely")
    pool = await _pool(engine.url, failover_wait=2.0)
    try:
        stream = await pool.submit("Count to a thousand:", LONG, rid="doomed")
        got: list[int] = []
        start = None
        with pytest.raises(EngineUnavailableError, match="no engine could take it"):
            async for out in stream:
                got += out.new_token_ids
                if len(got) >= 3 and start is None:
                    os.kill(engine.proc.pid, signal.SIGKILL)
                    start = time.monotonic()
        assert got and start is not None
        # Detection (a broken connection) is immediate; then failover_wait, then the error.
        assert time.monotonic() - start < 2.0 + 5.0
        assert not await pool.health()
    finally:
        await pool.shutdown()


async def test_abort_through_the_pool_stops_the_request(parrot_process):
    engine = _engine(parrot_process, "abortable")
    pool = await _pool(engine.url)
    try:
        stream = await pool.submit("Count to a thousand:", LONG, rid="stop-me")
        outs = []
        async for out in stream:
            outs.append(out)
            if len(outs) == 2:
                assert await pool.abort("stop-me")
            if out.finish_reason is not None:
                break
        assert outs[-1].finish_reason.kind is FinishKind.ABORT
        assert sum(len(o.new_token_ids) for o in outs) < 50
        for _ in range(40):  # the engine drops it too
            if (await pool.load()).running_requests == 0:
                break
            await asyncio.sleep(0.25)
        assert (await pool.load()).running_requests == 0
        assert not await pool.abort("stop-me")  # gone
    finally:
        await pool.shutdown()


RECORDS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "name": {"enum": ["ann", "bob", "cy"]}},
        "required": ["id", "name"],
        "additionalProperties": False,
    },
    "minItems": 12,
    "maxItems": 12,
}


async def test_a_constrained_request_resumes_on_another_engine_under_its_grammar(
    parrot_process,
):
    engines = [_engine(parrot_process, f"grammar{i}") for i in range(2)]
    sampling = SamplingParams(max_new_tokens=300, temperature=0, json_schema=json.dumps(RECORDS))
    prompt = "List twelve people as JSON records:"
    pool = await _pool(*(e.url for e in engines))
    try:
        whole = "".join([o.new_text async for o in await pool.submit(prompt, sampling)])
        jsonschema.validate(json.loads(whole), RECORDS)
        stream = await pool.submit(prompt, sampling, rid="moved")
        text, killed = "", None
        async for out in stream:
            text += out.new_text
            if killed is None and len(text) > 20:  # mid-output: kill the engine running it
                for e in engines:
                    if httpx.get(f"{e.url}/get_load", timeout=5).json()[0]["num_reqs"]:
                        os.kill(e.proc.pid, signal.SIGKILL)
                        killed = e
        assert killed is not None
        # Resumed from the committed tokens, the grammar advanced over them: the same output.
        assert text == whole
    finally:
        await pool.shutdown()
