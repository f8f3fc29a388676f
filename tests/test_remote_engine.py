"""`RemoteEngineClient` against real `parrot engine` subprocesses on 127.0.0.1 (SGLang's native
protocol): the same greedy output as the embedded engine, deltas, cache hits, typed errors,
abort, load, health; an unreachable, a stopped and a killed engine fail fast with what was
committed. The SGLang 0.5.5 / 0.5.23 stream shapes are decoded from literal events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from parrot_server.core.engine_client import EngineInfo, Submission
from parrot_server.core.remote_engine import (
    RemoteEngineClient,
    RemoteEngineConfig,
    finish_reason_from_sglang,
    sampling_params_body,
    typed_error,
)
from parrot_server.engine.config import EngineConfig
from parrot_server.engine.engine import Engine
from parrot_server.engine.errors import (
    EngineOverloadedError,
    EngineUnavailableError,
    InvalidRequestError,
    PromptTooLongError,
)
from parrot_server.engine.request import FinishKind, FinishReason
from parrot_server.engine.sampling_params import SamplingParams
from parrot_server.sglang_protocol import StreamDecoder, stream_error

# fp32 GEMMs as the tests' in-process model (`loaded_model`), whose outputs these are compared with.
FLAGS = [
    "--kv-pool-tokens", "4096", "--max-context-len", "512", "--log-level", "warning",
    "--gemm-dtype", "float32",
]  # fmt: skip
GREEDY = SamplingParams(max_new_tokens=12, temperature=0)
LONG = SamplingParams(max_new_tokens=400, temperature=0, ignore_eos=True)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def engines(parrot_process):
    """(the shared engine's URL, a second engine for the stop / kill test): spawned together
    so that their start-ups overlap."""
    shared = parrot_process(["engine", *FLAGS], "remote-engine")
    doomed = parrot_process(["engine", *FLAGS], "doomed-engine")
    return shared.wait_healthy().url, doomed


@pytest.fixture(scope="module")
def engine_url(engines):
    return engines[0]


@pytest.fixture(scope="module")
def local(loaded_model) -> Engine:
    """The embedded engine in this process, configured as the remote ones."""
    return Engine(EngineConfig(kv_pool_tokens=4096, max_context_len=512), loaded_model)


@contextlib.asynccontextmanager
async def connected(url: str, **kwargs):
    client = await RemoteEngineClient.connect(url, **kwargs)
    try:
        yield client
    finally:
        await client.shutdown()


async def collect(stream) -> tuple[list, list[int], str]:
    outs = [out async for out in stream]
    return outs, [t for o in outs for t in o.new_token_ids], "".join(o.new_text for o in outs)


@pytest.mark.slow
async def test_connect_reads_the_engine_and_its_tokenizer(engine_url, local):
    async with connected(engine_url) as client:
        info = client.info
        assert (info.model, info.max_context_len, info.kv_pool_tokens) == (
            "SmolLM2-135M-Instruct",
            512,
            4096,
        )
        assert info.max_running_requests == local.config.max_running_requests
        assert client.render_chat(QUESTION) == local.tokenizer.apply_chat_template(
            QUESTION, tokenize=False, add_generation_prompt=True
        )
        text = "Semantic variables, stored once; shared by many calls."
        assert await client.encode(text) == local.encode(text)
        assert await client.count_tokens(text) == len(local.encode(text))
        assert await client.health()


@pytest.mark.slow
def test_the_client_does_not_import_torch(engine_url):
    """The ServeCore side stays torch-free: the tokenizer comes from the engine's converted
    cache directory through the generic fast tokenizer class."""
    code = (
        "import asyncio, sys\n"
        "from parrot_server.core.remote_engine import RemoteEngineClient\n"
        "async def main():\n"
        f"    c = await RemoteEngineClient.connect({engine_url!r})\n"
        "    n = await c.count_tokens('hello world')\n"
        "    await c.shutdown()\n"
        "    print(n, 'torch' in sys.modules)\n"
        "asyncio.run(main())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "False"]


@pytest.mark.slow
async def test_greedy_stream_equals_the_local_engine(engine_url, local):
    prompt = local.tokenizer.apply_chat_template(
        QUESTION, tokenize=False, add_generation_prompt=True
    )
    [want] = local.generate([prompt], GREEDY)
    async with connected(engine_url) as client:
        stream = await client.submit(prompt, GREEDY)
        outs, ids, text = await collect(stream)
    assert (ids, text) == (want.new_token_ids, want.new_text) and "Paris" in text
    assert len(outs) > 1 and all(o.rid == stream.rid for o in outs)
    assert [o.finish_reason for o in outs[:-1]] == [None] * (len(outs) - 1)
    assert outs[-1].finish_reason == want.finish_reason
    assert outs[-1].completion_tokens == len(ids) and outs[-1].prompt_tokens == want.prompt_tokens
    # The engine's own non-streamed answer: the deltas add up to its text and ids.
    body = {"text": prompt, "sampling_params": {"max_new_tokens": 12, "temperature": 0}}
    whole = httpx.post(f"{engine_url}/generate", json=body, timeout=60).json()
    assert (whole["text"], whole["output_ids"]) == (text, ids)


@pytest.mark.slow
async def test_logprobs_and_penalties_cross_to_the_remote_engine(engine_url, local):
    """The logit processors and the logprobs request go over SGLang's protocol and come back
    as the embedded engine makes them."""
    prompt = "The word is apple. apple apple apple apple apple apple"
    sampling = SamplingParams(
        max_new_tokens=5, temperature=0, presence_penalty=2.0, logprobs=True, top_logprobs=2
    )
    [want] = local.generate([prompt], sampling)
    async with connected(engine_url) as client:
        outs, ids, _ = await collect(await client.submit(prompt, sampling))
    assert ids == want.new_token_ids
    got = [e for o in outs for e in o.logprobs or ()]
    assert [e.token_id for e in got] == ids
    for g, w in zip(got, want.logprobs, strict=True):
        assert g.logprob == pytest.approx(w.logprob, abs=1e-4)
        assert [t for t, _ in g.top] == [t for t, _ in w.top] and len(g.top) == 2


@pytest.mark.slow
async def test_a_repeated_prompt_is_served_from_the_cache(engine_url):
    prompt = "A list of rivers of Europe, longest first: the Volga, the Danube,"
    sampling = SamplingParams(max_new_tokens=4, temperature=0)
    async with connected(engine_url) as client:
        first, _, _ = await collect(await client.submit(prompt, sampling))
        again, _, _ = await collect(await client.submit(prompt, sampling))
    n = first[-1].prompt_tokens
    assert again[-1].prompt_tokens == n and again[-1].cached_tokens >= n - 1 > 0


@pytest.mark.slow
async def test_bad_requests_raise_typed_errors_before_streaming(engine_url):
    async with connected(engine_url) as client:
        good, out_of_vocab, too_long = await client.submit_many(
            [
                Submission("Hello", SamplingParams(max_new_tokens=2, temperature=0)),
                Submission([1, 2, 10**9], GREEDY),  # the engine answers 400
                Submission([1] * 600, GREEDY),  # over the 512-token window: caught here
            ]
        )
        assert isinstance(out_of_vocab, InvalidRequestError) and "10000000" in str(out_of_vocab)
        assert isinstance(too_long, PromptTooLongError) and "512" in str(too_long)
        outs, _, _ = await collect(good)  # the others' errors do not touch it
        assert outs[-1].finish_reason is not None
        with pytest.raises(InvalidRequestError, match="empty"):
            await client.submit([], GREEDY)
    with pytest.raises(InvalidRequestError, match="temperature"):
        SamplingParams(temperature=-1)  # never sent: refused before it reaches any engine


async def _wait_idle(client: RemoteEngineClient, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (load := await client.load()).running_requests + load.waiting_requests:
        assert time.monotonic() < deadline, f"engine still busy: {load}"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_abort_and_aclose_stop_the_request(engine_url):
    async with connected(engine_url) as client:
        stream = await client.submit("Count slowly:", LONG)
        first = await anext(aiter(stream))
        assert first.new_token_ids and first.finish_reason is None
        assert await client.abort(stream.rid)  # the engine says it was running
        outs, _, _ = await collect(stream)
        assert outs[-1].finish_reason.kind is FinishKind.ABORT
        assert outs[-1].completion_tokens < LONG.max_new_tokens
        assert not await client.abort(stream.rid)  # gone already

        stream = await client.submit("Count slowly:", LONG)
        await anext(aiter(stream))
        await stream.aclose()  # the consumer went away: the engine is told
        await _wait_idle(client)
        with pytest.raises(StopAsyncIteration):
            await anext(aiter(stream))

        other = await RemoteEngineClient.connect(engine_url)
        await anext(aiter(await other.submit("Count slowly:", LONG)))
        await other.shutdown()  # aborts its requests; the engine itself keeps serving
        await _wait_idle(client)
        assert await client.health()


@pytest.mark.slow
async def test_load_and_health(engine_url):
    async with connected(engine_url) as client:
        before = await client.load()
        await collect(await client.submit("One, two, three,", GREEDY))
        after = await client.load()
        assert after.kv_pool_tokens == 4096 and after.running_requests == 0
        assert after.generated_tokens_total >= before.generated_tokens_total + 1
        assert after.prompt_tokens_total > before.prompt_tokens_total
        assert 0 < after.cached_tokens <= after.kv_used_tokens <= 4096
        assert await client.health()
        [status] = await client.engines()
        assert status.healthy and status.name == engine_url


@pytest.mark.slow
def test_the_engine_answers_with_sglang_names_and_routes(engine_url):
    get = lambda path: httpx.get(f"{engine_url}{path}", timeout=10)  # noqa: E731
    model = get("/model_info").json()
    assert get("/get_model_info").json() == model  # SGLang 0.5.5's name for the same
    assert model["served_model_name"] == "SmolLM2-135M-Instruct"
    assert os.path.isfile(os.path.join(model["tokenizer_path"], "tokenizer.json"))
    server = get("/get_server_info").json()
    assert server["context_length"] == 512 and server["max_total_num_tokens"] == 4096
    assert server["incremental_streaming_output"] is False
    [load] = get("/get_load").json()  # one entry per data-parallel rank, as SGLang
    assert {"dp_rank", "num_reqs", "num_waiting_reqs", "num_tokens"} <= load.keys()
    assert get("/health_generate").status_code == 200


async def test_an_unreachable_engine_fails_fast():
    with socket_closed() as url:
        started = time.monotonic()
        with pytest.raises(EngineUnavailableError, match="GET /model_info"):
            await RemoteEngineClient.connect(url)
        info = EngineInfo("m", "m", 512, 4096, 8)
        client = RemoteEngineClient(url, None, info, RemoteEngineConfig(connect_timeout=0.5))
        [err] = await client.submit_many([Submission([1, 2, 3], GREEDY)])
        assert isinstance(err, EngineUnavailableError) and err.prompt_ids == [1, 2, 3]
        assert not await client.health()
        assert not await client.abort("nope")
        with pytest.raises(EngineUnavailableError):
            await client.load()
        await client.shutdown()
        assert time.monotonic() - started < 5


@contextlib.contextmanager
def socket_closed():
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


async def _read_some(stream, n: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n:
        ids += (await anext(aiter(stream))).new_token_ids
    return ids


@pytest.mark.slow
async def test_stopped_and_killed_engines_fail_with_the_committed_tokens(engines, local):
    """SIGSTOP: the stream's read timeout fires (never a hang); SIGKILL: the dropped stream
    fails at once. Each error carries the prompt and exactly the tokens streamed so far."""
    doomed = engines[1].wait_healthy()
    pid = doomed.proc.pid
    config = RemoteEngineConfig(stream_read_timeout=2.0, request_timeout=5.0)
    prompt = "The history of the printing press begins"
    async with connected(doomed.url, config=config) as client:
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            stream = await client.submit(prompt, LONG)
            seen = await _read_some(stream, 3)
            os.kill(pid, sig)
            started = time.monotonic()
            with pytest.raises(EngineUnavailableError) as caught:
                async for out in stream:
                    seen += out.new_token_ids  # those already on their way still arrive
            waited = time.monotonic() - started
            err = caught.value
            assert err.prompt_ids == local.encode(prompt) and err.output_ids == seen
            [want] = local.generate([prompt], SamplingParams(len(seen), 0.0, ignore_eos=True))
            assert err.output_ids == want.new_token_ids
            assert want.new_text.startswith(err.output_text)
            if sig == signal.SIGSTOP:
                assert "stream_read_timeout" in str(err) and 1.5 < waited < 5
                os.kill(pid, signal.SIGCONT)
            else:
                assert waited < 2
        assert not await client.health()


def test_finish_reasons_and_sampling_params_map_to_sglang_names():
    f = finish_reason_from_sglang
    assert f(None) is None
    assert f({"type": "stop", "matched": 2}) == FinishReason(FinishKind.STOP, 2)
    assert f({"type": "stop", "matched": "\n\n"}) == FinishReason(FinishKind.STOP, "\n\n")
    assert f({"type": "length", "length": 7}) == FinishReason(FinishKind.LENGTH, 7)
    aborted = f({"type": "abort", "message": "Abort before prefill", "status_code": None})
    assert aborted == FinishReason(FinishKind.ABORT, message="Abort before prefill")
    assert f({"type": "weird"}).kind is FinishKind.ABORT
    body = sampling_params_body(SamplingParams(max_new_tokens=5, temperature=0.5, stop="END"))
    assert body == {
        "max_new_tokens": 5,
        "temperature": 0.5,
        "top_p": 1.0,
        "top_k": -1,
        "stop": ["END"],
        "ignore_eos": False,
        "skip_special_tokens": True,
    }  # no null sampling_seed: SGLang 0.5.5 types it as a plain int
    seeded = sampling_params_body(SamplingParams(sampling_seed=3, stop_token_ids=(2,)))
    assert seeded["sampling_seed"] == 3 and seeded["stop_token_ids"] == [2]
    # Logit processors only when not neutral, under SGLang's names.
    biased = sampling_params_body(
        SamplingParams(max_new_tokens=4, min_p=0.1, min_new_tokens=2, logit_bias={7: -100})
    )
    assert biased["min_p"] == 0.1 and biased["min_new_tokens"] == 2
    assert biased["logit_bias"] == {"7": -100} and "repetition_penalty" not in biased


def _event(text, ids, total):
    return {"text": text, "output_ids": ids, "meta_info": {"completion_tokens": total}}


@pytest.mark.parametrize(
    "events, incremental",
    [
        # SGLang 0.5.23 (default) and our engine: text and ids so far.
        (
            [
                _event("Pa", [10], 1),
                _event("Paris", [10, 11], 2),
                _event("Paris.", [10, 11, 12], 3),
            ],
            False,
        ),
        # SGLang 0.5.5: text so far, but only the ids since the previous event.
        ([_event("Pa", [10], 1), _event("Paris", [11], 2), _event("Paris.", [12], 3)], False),
        # SGLang 0.5.23 with --incremental-streaming-output: both since the previous event.
        ([_event("Pa", [10], 1), _event("ris", [11], 2), _event(".", [12], 3)], True),
    ],
)
def test_stream_decoder_reads_every_05x_stream_shape(events, incremental):
    decoder = StreamDecoder(incremental)
    deltas = [decoder.feed(json.loads(json.dumps(e))) for e in events]
    assert deltas == [("Pa", [10]), ("ris", [11]), (".", [12])]
    assert (decoder.text, decoder.ids, decoder.ids_lost) == ("Paris.", [10, 11, 12], False)
    # 0.5.5 under load coalesces events and drops the ids of all but the last: noticed.
    lossy = StreamDecoder()
    lossy.feed(_event("Pa", [10], 1))
    lossy.feed(_event("Paris.", [12], 3))
    assert lossy.ids_lost and lossy.text == "Paris."


@pytest.mark.parametrize(
    "event, expected",
    [
        ({"error": {"message": "The input (9000 tokens) is longer"}}, InvalidRequestError),  # 0.5.5
        (
            {"error": {"message": "bad", "type": "invalid_request_error", "code": 400}},
            InvalidRequestError,
        ),
        (  # 0.5.23: a request refused mid-stream (queue full) ends as an abort with a status
            {
                "text": "",
                "output_ids": [],
                "meta_info": {
                    "completion_tokens": 0,
                    "finish_reason": {"type": "abort", "message": "queue full", "status_code": 503},
                },
            },
            EngineOverloadedError,
        ),
        # An engine failure: None, the stream then raises EngineUnavailableError (tested above).
        ({"error": {"message": "engine step failed", "code": 500}}, None),
    ],
)
def test_stream_error_events_become_typed_errors(event, expected):
    message, code = stream_error(event)
    err = typed_error("http://engine", code, message)
    assert type(err) is expected if expected is not None else err is None
    plain_abort = {"meta_info": {"finish_reason": {"type": "abort", "message": "Aborted"}}}
    assert stream_error(plain_abort) is None  # a client's abort is a finish, not an error
