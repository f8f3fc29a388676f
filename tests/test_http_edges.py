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
