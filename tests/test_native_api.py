"""Parrot's native API end to end: a real `parrot serve` on 127.0.0.1 with the real model,
driven over raw HTTP (the SDK has its own tests)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

API = "/api/v1"
GREEDY = {"max_tokens": 8, "temperature": 0}


@pytest.fixture
def client(server_url):
    with httpx.Client(base_url=server_url + API, timeout=120) as c:
        yield c


@pytest.fixture
def session(client):
    sid = client.post("/sessions", json={}).json()["session_id"]
    yield sid
    client.delete(f"/sessions/{sid}")


def step(cid: str, source: str | None, out: str, text: str, **sampling) -> dict:
    """A one-output call; `source` is the input variable (None: no input)."""
    inputs = {"x": source} if source else {}
    template = text + (" {{input:x}}" if source else "") + "\nAnswer: {{output:o}}"
    return {
        "id": cid,
        "template": template,
        "inputs": inputs,
        "outputs": {"o": {"var": out, "sampling": GREEDY | sampling}},
    }


def error_of(resp: httpx.Response) -> str:
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return body["error"]["message"]


@pytest.mark.slow
def test_three_step_chain_runs_server_side_in_one_request(server_url, session):
    requests: list[str] = []
    hooks = {"request": [lambda r: requests.append(f"{r.method} {r.url.path}")]}
    program = {
        "variables": [{"id": "topic", "value": "the moon"}],
        "calls": [
            step("s1", "topic", "fact", "Tell one fact about"),
            step("s2", "fact", "short", "Shorten:"),
            step("s3", "short", "title", "Give a title for:"),
        ],
    }
    with httpx.Client(base_url=server_url + API, timeout=120, event_hooks=hooks) as c:
        accepted = c.post(f"/sessions/{session}/programs", json=program)
        assert accepted.status_code == 201, accepted.text
        final = c.get(
            f"/sessions/{session}/variables/title", params={"criteria": "latency", "timeout": 120}
        ).json()
    assert requests == [
        f"POST {API}/sessions/{session}/programs",
        f"GET {API}/sessions/{session}/variables/title",
    ]
    assert final["status"] == "ready" and final["producer"] == "s3"
    with httpx.Client(base_url=server_url + API, timeout=30) as c:
        states = {v: c.get(f"/sessions/{session}/variables/{v}").json() for v in ("fact", "short")}
        calls = [c.get(f"/sessions/{session}/calls/{cid}").json() for cid in ("s1", "s2", "s3")]
    assert all(s["status"] == "ready" and s["value"] for s in states.values())
    assert [c["status"] for c in calls] == ["done"] * 3
    assert all(c["objective"] == "latency" for c in calls)  # deduced from the final get


@pytest.mark.slow
def test_map_reduce_with_eight_maps(client, session):
    chunks = {
        f"doc{k}": f"Note {k}: the number {k} is {'even' if k % 2 == 0 else 'odd'}."
        for k in range(8)
    }
    maps = [step(f"map{k}", f"doc{k}", f"sum{k}", "Summarize:", max_tokens=6) for k in range(8)]
    reduce_template = (
        "Combine these notes:\n"
        + "\n".join(f"- {{{{input:s{k}}}}}" for k in range(8))
        + "\nCombined: {{output:o}}"
    )
    reduce = {
        "id": "reduce",
        "template": reduce_template,
        "inputs": {f"s{k}": f"sum{k}" for k in range(8)},
        "outputs": {"o": {"var": "final", "sampling": GREEDY, "criteria": "latency"}},
    }
    program = {
        "variables": [{"id": k, "value": v} for k, v in chunks.items()],
        "calls": maps + [reduce],
    }
    accepted = client.post(f"/sessions/{session}/programs", json=program)
    assert accepted.status_code == 201, accepted.text
    infos = {c["id"]: c for c in accepted.json()["calls"]}
    assert {infos[f"map{k}"]["task_group"] for k in range(8)} == {"group-reduce"}
    assert all(infos[f"map{k}"]["objective"] == "latency" for k in range(8))
    final = client.get(f"/sessions/{session}/variables/final", params={"timeout": 120}).json()
    assert final["status"] == "ready" and final["value"]
    for k in range(8):
        assert client.get(f"/sessions/{session}/variables/sum{k}").json()["status"] == "ready"


def test_declared_task_group_shows_in_call_info(client, session):
    """`CallSpec.task_group` (client-declared) is the group the server reports for each call."""
    calls = [step(f"g{k}", None, f"go{k}", f"Say {k}.", max_tokens=1) for k in range(2)]
    program = {"calls": [c | {"task_group": "batch-7"} for c in calls]}
    accepted = client.post(f"/sessions/{session}/programs", json=program)
    assert accepted.status_code == 201, accepted.text
    assert [c["task_group"] for c in accepted.json()["calls"]] == ["batch-7", "batch-7"]
    assert client.get(f"/sessions/{session}/calls/g1").json()["task_group"] == "batch-7"
    bad = step("g9", None, "go9", "x") | {"task_group": "no spaces"}
    assert "task_group" in error_of(client.post(f"/sessions/{session}/calls", json=bad))


@pytest.mark.parametrize(
    "program, status, needle",
    [
        ({"calls": [step("a", "nope", "o", "x")]}, 400, "unknown variable 'nope'"),
        (
            {"calls": [{"template": "{{inptu:x}} {{output:o}}", "outputs": {"o": {"var": "o"}}}]},
            400,
            "bad template",
        ),
        (
            {
                "variables": [{"id": "p"}],
                "calls": [step("a", "p", "q", "x"), step("b", "q", "p", "y")],
            },
            400,
            "cycle",
        ),
        ({"calls": [step("a", None, "o", "x"), step("b", None, "o", "y")]}, 400, "two producers"),
        (
            {
                "variables": [{"id": "big", "value": "word " * 3000}],
                "calls": [step("a", "big", "o", "Read:")],
            },
            400,
            "exceeds the context window",
        ),
        ({"calls": [step("a", None, "o", "x", temperature=-1)]}, 400, "temperature"),
        ({"calls": [step("a", None, "o", "x", max_tokens=0)]}, 400, "max_tokens"),
        (  # max_tokens unset: only the prompt must fit, and this one does not
            {
                "variables": [{"id": "big", "value": "word " * 3000}],
                "calls": [step("a", "big", "o", "Read:", max_tokens=None)],
            },
            400,
            "leaves no room to generate in the context window",
        ),
        ({"calls": [step("a", None, "o", "x", top_p=0)]}, 400, "top_p"),
        ({"calls": [{"template": "{{output:o}}", "outputs": {}}]}, 400, "bindings"),
        ({"calls": [], "unknown_field": 1}, 400, "unknown_field"),
    ],
)
def test_bad_programs_get_4xx_with_the_reason(client, session, program, status, needle):
    resp = client.post(f"/sessions/{session}/programs", json=program)
    assert resp.status_code == status
    assert needle in error_of(resp)
    assert client.get(f"/sessions/{session}").json()["calls"] == 0  # rejected as a unit


def test_unknown_ids_and_conflicts(client, session):
    assert client.get("/sessions/nope").status_code == 404
    assert "not found" in error_of(client.get(f"/sessions/{session}/variables/nope"))
    assert (
        client.post(f"/sessions/{session}/variables", json={"id": "v", "value": "1"}).status_code
        == 201
    )
    assert client.post(f"/sessions/{session}/variables", json={"id": "v"}).status_code == 409
    assert client.put(f"/sessions/{session}/variables/v", json={"value": "2"}).status_code == 409
    assert client.get(f"/sessions/{session}/calls/nope").status_code == 404


def test_get_waits_at_most_its_timeout(client, session):
    client.post(f"/sessions/{session}/variables", json={"id": "later"})
    start = time.monotonic()
    state = client.get(f"/sessions/{session}/variables/later", params={"timeout": 0.3}).json()
    assert state["status"] == "pending" and time.monotonic() - start < 5
    client.put(f"/sessions/{session}/variables/later", json={"value": "now"})
    assert client.get(f"/sessions/{session}/variables/later").json()["value"] == "now"


@pytest.mark.slow
def test_failed_producer_fails_its_consumers_with_the_cause(client, session):
    """The input is set after submit, too long for the context window: the producer fails at
    run time and its consumer fails with the cause; nothing hangs."""
    program = {
        "variables": [{"id": "doc"}],
        "calls": [step("a", "doc", "x", "Read:"), step("b", "x", "y", "Then:")],
    }
    assert client.post(f"/sessions/{session}/programs", json=program).status_code == 201
    client.put(f"/sessions/{session}/variables/doc", json={"value": "word " * 3000})
    y = client.get(f"/sessions/{session}/variables/y", params={"timeout": 60}).json()
    assert y["status"] == "failed"
    assert "input 'x' failed" in y["error"] and "context window" in y["error"]
    a = client.get(f"/sessions/{session}/calls/a").json()
    assert a["status"] == "failed" and "context window" in a["error"]


@pytest.mark.slow
def test_cancel_a_running_call_and_stream_a_variable(server_url, client, session):
    long = step(
        "long", None, "essay", "Write a long essay about rivers.", max_tokens=1500, ignore_eos=True
    )
    assert client.post(f"/sessions/{session}/calls", json=long).status_code == 201
    with client.stream("GET", f"/sessions/{session}/variables/essay/stream") as resp:
        events = []
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
                if len(events) == 3:
                    cancelled = client.delete(f"/sessions/{session}/calls/long").json()
        assert events[-1]["done"] and "cancelled" in events[-1]["error"]
    assert cancelled["status"] == "cancelled"
    assert "".join(e["delta"] for e in events[:3])
    info = httpx.get(server_url + "/server_info").json()["internal_states"][0]
    assert info["running_requests"] == 0  # the engine request was aborted, its KV freed


@pytest.mark.slow
def test_session_expiry_frees_its_variables_and_engine_work(client):
    sid = client.post("/sessions", json={"ttl_seconds": 1}).json()["session_id"]
    client.post(f"/sessions/{sid}/variables", json={"id": "never"})
    client.post(f"/sessions/{sid}/calls", json=step("c", "never", "o", "x"))
    time.sleep(3)
    assert client.get(f"/sessions/{sid}").status_code == 404
    # a closed session's calls are cancelled too
    sid = client.post("/sessions", json={}).json()["session_id"]
    client.post(
        f"/sessions/{sid}/calls", json=step("c", None, "o", "x", max_tokens=1500, ignore_eos=True)
    )
    assert client.delete(f"/sessions/{sid}").status_code == 204
    assert client.get(f"/sessions/{sid}").status_code == 404


def test_health_and_metrics(server_url):
    health = httpx.get(server_url + "/health").json()
    assert health["status"] == "ok" and health["model"]
    text = httpx.get(server_url + "/metrics").text
    for name in (
        "parrot_queue_depth",
        "parrot_kv_used_tokens",
        "parrot_prefix_cache_hit_rate",
        "parrot_draft_acceptance_rate",
        "parrot_request_latency_seconds",
        "parrot_time_to_first_token_seconds",
    ):
        assert name in text


def _cached_prompt_tokens(server_url: str) -> float:
    text = httpx.get(server_url + "/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "parrot_cached_prompt_tokens":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError("parrot_cached_prompt_tokens_total missing from /metrics")


@pytest.mark.slow
def test_static_prefix_is_shared_across_sessions(server_url, client):
    """A template's constant text before its first input is computed once: a second session
    calling the same template reads it from the prefix cache."""
    prefix = "You are a careful assistant. " + " ".join(f"Rule {k}: be brief." for k in range(40))
    call = step("c", "q", "o", prefix + "\nQuestion:", max_tokens=2)
    sessions = [client.post("/sessions", json={}).json()["session_id"] for _ in range(2)]
    try:
        before = []
        for k, sid in enumerate(sessions):
            before.append(_cached_prompt_tokens(server_url))
            program = {"variables": [{"id": "q", "value": f"question {k}?"}], "calls": [call]}
            assert client.post(f"/sessions/{sid}/programs", json=program).status_code == 201
            assert (
                client.get(f"/sessions/{sid}/variables/o", params={"timeout": 60}).json()["status"]
                == "ready"
            )
        reused = _cached_prompt_tokens(server_url) - before[1]
        # English text is ~4 characters a token: len/8 is a safe lower bound of the prefix's
        # tokens (the first session's call shows it is not cached before: that one computes it).
        assert reused >= len(prefix) // 8, (reused, len(prefix))
    finally:
        for sid in sessions:
            client.delete(f"/sessions/{sid}")


@pytest.mark.slow
def test_chat_call_with_system_turn_equals_the_openai_chat_answer(server_url, client, session):
    """chat=true renders the same prompt as /v1/chat/completions: greedy answers are equal."""
    call = {
        "template": "Name one color of the sky.{{output:a}}",
        "outputs": {"a": {"var": "a", "sampling": GREEDY}},
        "chat": True,
        "system": "You answer in one word.",
    }
    assert client.post(f"/sessions/{session}/calls", json=call).status_code == 201
    native = client.get(f"/sessions/{session}/variables/a", params={"timeout": 60}).json()
    messages = [
        {"role": "system", "content": call["system"]},
        {"role": "user", "content": "Name one color of the sky."},
    ]
    body = {"messages": messages, "max_tokens": GREEDY["max_tokens"], "temperature": 0}
    openai = httpx.post(server_url + "/v1/chat/completions", json=body, timeout=60).json()
    assert native["value"] == openai["choices"][0]["message"]["content"]
    bad = call | {"chat": False, "outputs": {"a": {"var": "b"}}}
    assert "needs chat" in error_of(client.post(f"/sessions/{session}/calls", json=bad))


# -- usage and unset max_tokens -----------------------------------------------------------------
def _read(client, session: str, var: str) -> dict:
    state = client.get(f"/sessions/{session}/variables/{var}", params={"timeout": 120}).json()
    assert state["status"] == "ready", state
    return state


def test_produced_variables_report_usage_as_v1_does(server_url, client, session):
    """A call's output carries its usage (as /v1 counts it) and finish reason; a repeated
    prompt is served from the prefix cache; a client's value has no usage."""
    prompt = "Count slowly: one, two, three,"
    five = {"max_tokens": 5, "ignore_eos": True}  # exactly 5 tokens generated
    program = {
        "variables": [{"id": "n", "value": "three"}],
        "calls": [step("c1", None, "o1", prompt, **five)],
    }
    assert client.post(f"/sessions/{session}/programs", json=program).status_code == 201
    first = _read(client, session, "o1")
    model = httpx.get(server_url + "/health").json()["model"]
    usage = first["usage"]
    assert usage["completion_tokens"] == 5 and usage["finish_reason"] == "length"
    assert usage["prompt_tokens"] > 0 and usage["model"] == model
    # The same prompt through /v1/completions: the same text and the same counts.
    body = {"prompt": prompt + "\nAnswer: ", "temperature": 0, **five}
    v1 = httpx.post(server_url + "/v1/completions", json=body, timeout=60).json()
    assert v1["choices"][0]["text"] == first["value"]
    assert (v1["usage"]["prompt_tokens"], v1["usage"]["completion_tokens"]) == (
        usage["prompt_tokens"],
        5,
    )
    # Repeated in a new call: all but the last prompt token come from the cache.
    assert client.post(
        f"/sessions/{session}/calls", json=step("c2", None, "o2", prompt, **five)
    ).is_success
    again = _read(client, session, "o2")["usage"]
    assert 0 < again["prompt_tokens"] - 1 <= again["cached_tokens"]
    assert again["completion_tokens"] == 5
    assert client.get(f"/sessions/{session}/variables/n").json()["usage"] is None
    # A reply that ends by itself says "stop"; the stream's last event has the usage too.
    call = {
        "template": "Answer with one word: what colour is the sky?{{output:a}}",
        "outputs": {"a": {"var": "a", "sampling": {"max_tokens": None, "temperature": 0}}},
        "chat": True,
    }
    assert client.post(f"/sessions/{session}/calls", json=call).is_success
    with client.stream("GET", f"/sessions/{session}/variables/a/stream") as resp:
        events = [json.loads(x[6:]) for x in resp.iter_lines() if x.startswith("data: {")]
    done = events[-1]
    assert done["done"] and done["usage"]["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] < 64  # stopped by itself, well before the window
    assert done["usage"] == _read(client, session, "a")["usage"]


@pytest.mark.slow
def test_unset_max_tokens_runs_to_the_end_of_the_window(server_url, client, session):
    """max_tokens=None: the limit is the window (2048 here, the pool is larger) less the
    prompt and one token (what an SGLang worker accepts), the same rule as /v1's default."""
    text = "word " * 2030  # close to the window: few tokens left to generate
    program = {
        "variables": [{"id": "doc", "value": text}],
        "calls": [
            {
                "template": "{{input:doc}}{{output:o}}",
                "inputs": {"doc": "doc"},
                "outputs": {
                    "o": {
                        "var": "o",
                        "sampling": {"max_tokens": None, "temperature": 0, "ignore_eos": True},
                    }
                },
            }
        ],
    }
    assert client.post(f"/sessions/{session}/programs", json=program).status_code == 201
    state = _read(client, session, "o")
    usage = state["usage"]
    assert usage["finish_reason"] == "length"
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 2048 - 1
    body = {"prompt": text, "temperature": 0, "ignore_eos": True}  # no max_tokens
    v1 = httpx.post(server_url + "/v1/completions", json=body, timeout=120).json()
    assert v1["choices"][0]["text"] == state["value"]
    assert v1["usage"]["completion_tokens"] == usage["completion_tokens"]


@pytest.mark.slow
def test_penalties_and_logit_bias_in_native_sampling(server_url, client, session):
    """`SamplingOptions` maps the penalties and `logit_bias` as `/v1` does."""
    (banana,) = httpx.post(f"{server_url}/tokenize", json={"prompt": " banana"}).json()["tokens"]
    call = step("c", None, "o", "Name a fruit.", max_tokens=2, logit_bias={str(banana): 100})
    assert client.post(f"/sessions/{session}/calls", json=call).status_code == 201
    value = client.get(f"/sessions/{session}/variables/o", params={"timeout": 60}).json()
    assert value["value"] == " banana banana"
    bad = step("d", None, "p", "x", presence_penalty=3)
    resp = client.post(f"/sessions/{session}/calls", json=bad)
    assert resp.status_code == 400 and "presence_penalty" in error_of(resp)
