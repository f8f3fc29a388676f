"""The OpenAI-compatible API (`/v1/...`) driven by the official `openai` client, against a real
uvicorn server on 127.0.0.1 with the real model (SmolLM2-135M, CPU)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import openai
import pytest


@pytest.fixture(scope="session")
def base_url(server_url):
    return server_url  # the real `parrot serve` (tests/conftest.py)


@pytest.fixture(scope="session")
def client(base_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def model(client) -> str:
    return client.models.list().data[0].id


def _running(base_url: str) -> int:
    state = httpx.get(f"{base_url}/server_info", timeout=10).json()["internal_states"][0]
    return state["running_requests"] + state["waiting_requests"]


def _no_tracebacks(server_log) -> None:
    # Clients' mistakes and disconnects are not server errors.
    assert "Traceback" not in server_log.read_text()


# The test server is shared: work another module left running (at most a full context window
# of tokens) is waited out before the engine-count checks.
UNRELATED_WORK_SECONDS = 150.0


def _wait_idle(base_url: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while _running(base_url):
        assert time.monotonic() < deadline, "the engine request was not aborted"
        time.sleep(0.1)


# -- models -----------------------------------------------------------------------------------


def test_models_list_and_retrieve(client, model):
    models = client.models.list()
    # The chat model, then the embedding model served beside it.
    assert [m.id for m in models.data] == [model, "all-MiniLM-L6-v2"]
    assert models.data[0].object == "model"
    assert client.models.retrieve(model).id == model
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.models.retrieve("gpt-4o")


# -- completions and chat ---------------------------------------------------------------------


def test_completion(client, model):
    r = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == model
    choice = r.choices[0]
    assert choice.text and choice.finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 0 and 0 < u.completion_tokens <= 8
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens >= 0


def test_chat(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=12,
        temperature=0,
    )
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    msg = r.choices[0].message
    assert msg.role == "assistant" and msg.content
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens <= 12


def test_model_may_be_omitted_or_default(base_url, model):
    body = {"prompt": "Hello", "max_tokens": 2, "temperature": 0}
    for extra in ({}, {"model": "default"}):
        r = httpx.post(f"{base_url}/v1/completions", json=body | extra, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == model


def test_text_parts_equal_string_content(client, model):
    def ask(content):
        return (
            client.chat.completions.create(
                model=model,
                messages=[{"role": "developer", "content": "Be brief."}]
                + [{"role": "user", "content": content}],
                max_tokens=8,
                temperature=0,
            )
            .choices[0]
            .message.content
        )

    parts = [{"type": "text", "text": "Name a color."}, {"type": "text", "text": "One word."}]
    assert ask(parts) == ask("Name a color.\nOne word.")


def test_chat_stream_equals_non_streamed(client, model):
    kw = dict(
        model=model,
        messages=[{"role": "user", "content": "Tell me a story about a cat."}],
        max_tokens=12,
        temperature=0,
    )
    full = client.chat.completions.create(**kw)
    chunks = list(
        client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == [full.choices[0].finish_reason]
    last = chunks[-1]  # include_usage: a final chunk with no choices and the usage
    assert last.choices == [] and last.usage.completion_tokens == full.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_a_repeating_answer_is_verified_from_drafts_and_streams_whole(client, model, base_url):
    def accepted() -> int:
        state = httpx.get(f"{base_url}/server_info", timeout=10).json()["internal_states"][0]
        return state["accepted_draft_tokens_total"]

    kw = dict(
        model=model,
        messages=[
            {
                "role": "user",
                "content": "Repeat this sentence exactly: The old lighthouse keeper climbed the "
                "stairs every night to light the lamp for the ships.",
            }
        ],
        max_tokens=30,
        temperature=0,
    )
    before = accepted()
    full = client.chat.completions.create(**kw)
    assert "lamp" in full.choices[0].message.content
    assert accepted() - before >= 5  # steps took several tokens at once
    metrics = httpx.get(f"{base_url}/metrics", timeout=10).text
    (rate,) = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("parrot_draft_acceptance_rate{")
    ]
    assert 0 < rate <= 1
    # Several tokens of one step stream as the same text.
    chunks = list(client.chat.completions.create(**kw, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content


def test_completion_stream_equals_non_streamed(client, model):
    kw = dict(model=model, prompt="Once upon a time", max_tokens=12, temperature=0)
    full = client.completions.create(**kw)
    chunks = list(
        client.completions.create(**kw, stream=True, stream_options={"include_usage": True})
    )
    *text_chunks, usage_chunk = chunks
    assert "".join(c.choices[0].text for c in text_chunks) == full.choices[0].text
    assert text_chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])
    assert usage_chunk.choices == [] and usage_chunk.usage.total_tokens == full.usage.total_tokens


def test_second_identical_request_reports_cached_tokens(client, model):
    prompt = f"[{uuid.uuid4().hex}] Write a haiku about the sea."
    first = client.completions.create(model=model, prompt=prompt, max_tokens=2, temperature=0)
    second = client.completions.create(model=model, prompt=prompt, max_tokens=2, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached > first.usage.prompt_tokens_details.cached_tokens
    assert cached >= second.usage.prompt_tokens - 1  # the last token is always recomputed


def test_stop_string(client, model):
    kw = dict(model=model, prompt="Count: 1, 2, 3,", max_tokens=12, temperature=0)
    free = client.completions.create(**kw, extra_body={"ignore_eos": True}).choices[0].text
    assert len(free) > 4
    stop = free[2:4]  # a stop string surely in the greedy output; the output ends before it
    cut = client.completions.create(**kw, stop=[stop, "never-seen"]).choices[0]
    assert cut.finish_reason == "stop" and cut.text == free[: free.index(stop)]


def test_max_tokens_gives_finish_reason_length(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Write a long essay about rivers."}],
        max_completion_tokens=3,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3


def test_seed_reproducible_at_temperature(client, model):
    def sample(seed):
        return (
            client.completions.create(
                model=model,
                prompt="My favourite animal is",
                max_tokens=6,
                temperature=1.0,
                seed=seed,
                extra_body={"ignore_eos": True},
            )
            .choices[0]
            .text
        )

    assert sample(1234) == sample(1234)
    assert len({sample(s) for s in (1, 2, 3)}) > 1  # and the seed does matter


def test_top_p_zero_is_the_top_token(client, model):
    def text(**kw):
        r = client.completions.create(model=model, prompt="The sky is", max_tokens=6, **kw)
        return r.choices[0].text

    assert text(temperature=1.0, top_p=0) == text(temperature=0)


def test_extensions_criteria_top_k_and_session_id(client, model, base_url):
    sid = httpx.post(f"{base_url}/api/v1/sessions", json={}, timeout=10).json()["session_id"]
    for criteria in ("latency", "throughput"):
        r = client.completions.create(
            model=model,
            prompt="Hi",
            max_tokens=2,
            extra_body={"criteria": criteria, "session_id": sid, "top_k": 5},
        )
        assert r.usage.completion_tokens >= 1
    with pytest.raises(openai.BadRequestError, match="criteria"):
        client.completions.create(
            model=model, prompt="Hi", max_tokens=2, extra_body={"criteria": "fast"}
        )
    with pytest.raises(openai.NotFoundError, match="session"):
        client.completions.create(
            model=model, prompt="Hi", max_tokens=2, extra_body={"session_id": "no-such-session"}
        )


def test_metrics_count_openai_requests(client, model, base_url):
    def ok_count() -> float:
        text = httpx.get(f"{base_url}/metrics", timeout=10).text
        line = 'parrot_requests_total{api="openai",outcome="ok"} '
        return sum(float(x[len(line) :]) for x in text.splitlines() if x.startswith(line))

    before = ok_count()
    client.completions.create(model=model, prompt="Hi", max_tokens=2)
    assert ok_count() == before + 1
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    ttft = 'parrot_time_to_first_token_seconds_count{api="openai",model_name="%s",objective="none"}'
    assert ttft % model in text


# -- errors -----------------------------------------------------------------------------------


def _chat_error(client, model, **kw):
    kw.setdefault("messages", [{"role": "user", "content": "hi"}])
    kw.setdefault("max_tokens", 2)
    return client.chat.completions.create(model=model, **kw)


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 17}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"stop": ""}, "stop"),
        ({"seed": 2**64}, "seed"),
        ({"top_logprobs": 3}, "logprobs"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"modalities": ["audio"]}, "modalities"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "x"}, "tool"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "text content",
        ),
        ({"messages": [{"role": "user", "content": "word " * 3000}]}, "context window"),
    ],
)
def test_bad_chat_requests_raise_bad_request(client, model, server_log, kw, needle):
    with pytest.raises(openai.BadRequestError, match=needle) as info:
        _chat_error(client, model, **kw)
    err = info.value.body
    assert info.value.status_code == 400 and err["type"] == "invalid_request_error"
    assert err["message"] and err["code"] == 400
    _no_tracebacks(server_log)


def test_bad_completion_requests(client, model):
    for kw, needle in [
        ({"prompt": ["one", "two"]}, "one prompt"),
        ({"prompt": "x", "echo": True, "logprobs": 1}, "echo"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
        ({"prompt": ""}, "empty"),
        ({"prompt": "word " * 3000}, "context window"),
    ]:
        with pytest.raises(openai.BadRequestError, match=needle):
            client.completions.create(model=model, max_tokens=2, **kw)


def test_unknown_model_is_404_streaming_or_not(client):
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError, match="gpt-4o"):
            _chat_error(client, "gpt-4o", stream=stream)
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="gpt-4o", prompt="x", max_tokens=2, stream=stream)


def test_malformed_bodies_get_400_in_openai_shape(base_url):
    url = f"{base_url}/v1/chat/completions"
    headers = {"content-type": "application/json"}
    for body in ('{"messages": [', '"just a string"', '{"messages": "hi"}', '{"max_tokens": 2}'):
        r = httpx.post(url, content=body, headers=headers, timeout=30)
        assert r.status_code == 400, (body, r.status_code, r.text)
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["message"] and err["code"] == 400


# -- streams that end early -------------------------------------------------------------------


@pytest.mark.slow
def test_abort_mid_stream_sends_an_error_event(client, model, base_url):
    _wait_idle(base_url, within=UNRELATED_WORK_SECONDS)  # the engine counts are ours alone
    stream = client.completions.create(
        model=model,
        prompt="Once",
        max_tokens=1500,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    first = next(iter(stream))
    r = httpx.post(f"{base_url}/abort_request", json={"rid": first.id}, timeout=10)
    assert r.json() == {"aborted": [first.id]}  # the response id is the engine request id
    with pytest.raises(openai.APIError, match="aborted"):
        for _ in stream:
            pass
    _wait_idle(base_url)


@pytest.mark.slow
def test_client_disconnect_aborts_the_engine_request(base_url, server_log):
    _wait_idle(base_url, within=UNRELATED_WORK_SECONDS)
    body = {"prompt": "Once", "max_tokens": 1500, "ignore_eos": True}
    with httpx.stream(
        "POST", f"{base_url}/v1/completions", json=body | {"stream": True}, timeout=60
    ) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert _running(base_url) == 1
    _wait_idle(base_url)  # leaving the block closed the connection mid-stream
    with pytest.raises(httpx.ReadTimeout):  # not streamed: the client gives up waiting
        httpx.post(f"{base_url}/v1/completions", json=body, timeout=1.5)
    _wait_idle(base_url)
    _no_tracebacks(server_log)


def test_sse_wire_format(base_url):
    body = {
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 3,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    first = json.loads(events[0][len("data: ") :])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    last = json.loads(events[-2][len("data: ") :])
    assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"]
    assert all(json.loads(e[len("data: ") :])["usage"] is None for e in events[:-1])


async def test_async_client_concurrent_streams(base_url, model):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)

    async def one(topic: str) -> tuple[str, str | None]:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"One sentence about {topic}."}],
            max_tokens=6,
            temperature=0,
            stream=True,
        )
        text, finish = [], None
        async for c in stream:
            text.append(c.choices[0].delta.content or "")
            finish = c.choices[0].finish_reason or finish
        return "".join(text), finish

    async with client:
        results = await asyncio.gather(*(one(t) for t in ("cats", "dogs", "rain", "tea")))
    assert all(text and finish in ("stop", "length") for text, finish in results)
