"""Edges of the HTTP surface found by probing a live server: text that is not valid Unicode,
streams of client-set variables, the headers of error answers, the OpenAPI document. Against
the session's real `parrot serve` (tests/conftest.py)."""

from __future__ import annotations

import json

import httpx
import pytest

API = "/api/v1"


@pytest.fixture
def client(server_url):
    with httpx.Client(base_url=server_url, timeout=60) as c:
        yield c


@pytest.fixture
def session(client):
    sid = client.post(f"{API}/sessions", json={}).json()["session_id"]
    yield sid
    client.delete(f"{API}/sessions/{sid}")


def _events(client: httpx.Client, path: str) -> list[dict]:
    with client.stream("GET", path) as resp:
        assert resp.status_code == 200
        lines = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


# -- streams of variables a client set ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("how", ["created with it", "set later"])
def test_streaming_a_client_set_variable_sends_its_value(client, session, how):
    value = "the whole value, ünïcode too"
    if how == "created with it":
        client.post(f"{API}/sessions/{session}/variables", json={"id": "v", "value": value})
    else:
        client.post(f"{API}/sessions/{session}/variables", json={"id": "v"})
        client.put(f"{API}/sessions/{session}/variables/v", json={"value": value})
    events = _events(client, f"{API}/sessions/{session}/variables/v/stream")
    assert [e["delta"] for e in events] == [value, ""]
    assert [e["done"] for e in events] == [False, True] and events[-1]["error"] is None


# -- text that is not valid Unicode --------------------------------------------------------------

LONE = '"a\\ud800b"'  # JSON text: the escape of a high surrogate with no low one after it


def _lone(template: str) -> str:
    """`template` (JSON text) with each LONE replaced by a string holding a lone surrogate."""
    return template.replace("LONE", LONE)


def _post_raw(client: httpx.Client, method: str, path: str, body: str | bytes) -> httpx.Response:
    headers = {"content-type": "application/json"}
    return client.request(method, path, content=body, headers=headers)


@pytest.mark.slow
@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/v1/completions", '{"prompt": LONE, "max_tokens": 2}', "prompt"),
        (
            "/v1/chat/completions",
            '{"messages": [{"role": "user", "content": LONE}], "max_tokens": 2}',
            "messages.0.content",
        ),
        ("/generate", '{"text": LONE, "sampling_params": {"max_new_tokens": 2}}', "text"),
        (
            "/generate",
            '{"text": "hi", "sampling_params": {"stop": ["x", LONE]}}',
            "sampling_params",
        ),
    ],
)
def test_a_lone_surrogate_is_a_400_naming_the_field(client, server_log, path, body, field):
    resp = _post_raw(client, "POST", path, _lone(body))
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and "surrogate" in error["message"]
    assert error["param"].startswith(field)
    assert "Traceback" not in server_log.read_text()


@pytest.mark.slow
def test_a_variable_with_a_lone_surrogate_is_refused_not_stored(client, session):
    base = f"{API}/sessions/{session}"
    resp = _post_raw(client, "POST", f"{base}/variables", _lone('{"id": "v", "value": LONE}'))
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "value"
    assert client.get(f"{base}/variables/v").status_code == 404  # nothing was stored
    client.post(f"{base}/variables", json={"id": "w"})
    resp = _post_raw(client, "PUT", f"{base}/variables/w", _lone('{"value": LONE}'))
    assert resp.status_code == 400
    assert client.get(f"{base}/variables/w", params={"timeout": 0}).json()["status"] == "pending"
    program = _lone(
        '{"variables": [{"id": "p", "value": "ok"}], '
        '"calls": [{"template": LONE, "outputs": {"o": {"var": "o"}}}]}'
    )
    assert _post_raw(client, "POST", f"{base}/programs", program).status_code == 400
    assert client.get(f"{base}/variables/p").status_code == 404  # the program left no trace
    # Surrogates as raw bytes (CESU-8, which Python's JSON decoder lets through) alike.
    raw = b'{"id": "r", "value": "a\xed\xa0\x80b"}'
    assert _post_raw(client, "POST", f"{base}/variables", raw).status_code == 400
    # A valid pair (one character beyond U+FFFF) is fine.
    pair = '{"id": "e", "value": "\\ud83d\\ude00"}'
    assert _post_raw(client, "POST", f"{base}/variables", pair).status_code == 201
    assert client.get(f"{base}/variables/e").json()["value"] == "\U0001f600"


@pytest.mark.slow
def test_every_route_taking_a_body_refuses_a_lone_surrogate(client, session):
    """Whatever the route, a lone surrogate anywhere in the body (here in a key the route does
    not know, deep inside) is the 400 of this check, not a 500 or an unknown-field error."""
    doc = client.get("/openapi.json").json()
    routes = [
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if "requestBody" in op
    ]
    assert ("POST", "/generate") in routes and ("PUT", "/generate") in routes
    assert len(routes) >= 9
    body = _lone('{"deep": [{"k": LONE}]}')
    for method, path in routes:
        url = path.format(sid=session, var_id="v", call_id="c")
        resp = _post_raw(client, method, url, body)
        assert resp.status_code == 400, (method, path, resp.text)
        assert resp.json()["error"]["param"] == "deep.0.k", (method, path)


# -- headers and bodies of small answers -----------------------------------------------------------


@pytest.mark.slow
def test_405_lists_every_method_the_path_takes(client, session):
    resp = client.request("PATCH", f"{API}/sessions/{session}")
    assert resp.status_code == 405
    assert set(resp.headers["allow"].split(", ")) == {"GET", "DELETE"}
    assert resp.json()["error"]["code"] == 405
    resp = client.delete("/generate")
    assert set(resp.headers["allow"].split(", ")) == {"POST", "PUT"}


@pytest.mark.slow
def test_health_generate_generates_a_token(client):
    def generated() -> int:
        return client.get("/server_info").json()["internal_states"][0]["generated_tokens_total"]

    before = generated()
    resp = client.get("/health_generate")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert resp.json() == {"status": "ok"}
    assert generated() > before  # it went through the model, not just the route


# -- the OpenAPI document says what the server answers --------------------------------------------


@pytest.mark.slow
def test_openapi_document_matches_the_answers(client):
    doc = client.get("/openapi.json").json()
    ops = {(method, path): op for path, item in doc["paths"].items() for method, op in item.items()}
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for (method, path), op in ops.items():
        assert "422" not in op["responses"], (method, path)  # validation errors are 400s
        for status, answer in op["responses"].items():
            if status.startswith(("4", "5")) or status == "default":
                if path == "/health":
                    continue  # its 503 is the health report itself
                schema = answer["content"]["application/json"]["schema"]
                assert schema == error_ref, (method, path, status)
        if "requestBody" in op:
            assert {"400", "413", "408"} <= set(op["responses"]), (method, path)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    programs = ops[("post", "/api/v1/sessions/{sid}/programs")]["responses"]
    assert {"404", "409", "429", "503"} <= set(programs)
    assert "Retry-After" in programs["429"]["headers"]
    assert list(ops[("get", "/metrics")]["responses"]["200"]["content"]) == ["text/plain"]
    assert "text/plain" in ops[("post", "/flush_cache")]["responses"]["200"]["content"]
    chat = ops[("post", "/v1/chat/completions")]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}
    # What the server says matches: a text route answers text, a 404 the error body.
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert client.get(f"{API}/sessions/nope").json()["error"]["code"] == 404
