"""Bounds on what one request can make the server do: body size (413) and the time its body may
take (408), over-long prompts refused from their length, and `Retry-After` on 429 and 503.
A real `parrot serve` with small limits, driven over raw sockets where HTTP clients would not
misbehave as needed."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time

import httpx
import pytest

from parrot_server.engine.async_engine import AsyncEngine
from parrot_server.http.app import create_engine_app

LIMIT = 64 * 1024
BODY_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server(parrot_process):
    flags = [
        *("--kv-pool-tokens", "4096", "--max-context-len", "512", "--log-level", "warning"),
        *("--max-request-bytes", str(LIMIT), "--request-body-timeout", str(BODY_TIMEOUT)),
        *("--max-sessions", "1", "--max-running-requests", "1", "--max-queued-requests", "1"),
        "--no-embedding-model",
    ]
    server = parrot_process(["serve", *flags], "limits").wait_healthy()
    yield server
    # Clients that misbehave are not server errors.
    assert "Traceback" not in server.log.read_text()


@pytest.fixture(scope="module")
def url(server):
    return server.url


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the answer; the server must then close the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


def _error(status: int, headers: dict[str, str], body: bytes, expected: int) -> str:
    assert status == expected, body
    assert headers["connection"] == "close" and headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == expected
    return error["message"]


@pytest.mark.slow
def test_a_body_announced_over_the_limit_is_a_413_before_it_is_read(url):
    with _connect(url) as sock:
        sock.sendall(_head("/v1/completions", content_length=str(100 * 1024 * 1024)))
        message = _error(*_response(sock), 413)
    assert str(LIMIT) in message and "--max-request-bytes" in message


@pytest.mark.slow
def test_a_body_over_the_limit_is_counted_whatever_the_headers_say(url):
    with _connect(url) as sock:  # chunked: no length announced
        sock.sendall(_head("/v1/completions", transfer_encoding="chunked"))
        sent = 0
        while sent <= LIMIT:  # just over the limit, so the server has read all we sent
            piece = b"x" * 4096
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
        _error(*_response(sock), 413)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stalls", "trickles", "announces more than it sends"])
def test_a_slow_body_is_a_408_in_bounded_time(url, how):
    with _connect(url) as sock:
        start = time.monotonic()
        sock.sendall(_head("/api/v1/sessions", content_length="1000"))
        if how == "announces more than it sends":
            sock.sendall(b'{"ttl_seconds": 5}')
        if how == "trickles":  # a byte at a time: each one in time, the whole body not
            for _ in range(int(BODY_TIMEOUT * 2) + 20):
                if select.select([sock], [], [], 0.5)[0]:  # answered: stop sending
                    break
                sock.sendall(b" ")
        message = _error(*_response(sock), 408)
        assert time.monotonic() - start < BODY_TIMEOUT + 10
    assert "--request-body-timeout" in message


@pytest.mark.slow
def test_a_client_that_leaves_mid_body_leaves_the_server_well(url, tmp_path):
    with _connect(url) as sock:
        sock.sendall(_head("/api/v1/sessions", content_length="1000") + b"{")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1024) == b""  # closed without an answer
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200


@pytest.mark.slow
def test_bodies_within_the_limit_reach_their_routes(url):
    prompt = "word " * ((LIMIT - 200) // 5)  # within the body limit, too long for the window
    resp = httpx.post(f"{url}/v1/completions", json={"prompt": prompt, "max_tokens": 1}, timeout=60)
    # Refused from its length (in characters), before it was tokenized.
    message = resp.json()["error"]["message"]
    assert resp.status_code == 400 and "characters" in message and "context window" in message
    ok = httpx.post(f"{url}/v1/completions", json={"prompt": "Hi", "max_tokens": 1}, timeout=60)
    assert ok.status_code == 200


@pytest.mark.slow
def test_without_an_embedding_model_the_route_says_how_to_enable_one(url):
    resp = httpx.post(f"{url}/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "hi"})
    assert resp.status_code == 404 and "--embedding-model" in resp.json()["error"]["message"]
    models = httpx.get(f"{url}/v1/models").json()["data"]
    assert "all-MiniLM-L6-v2" not in [m["id"] for m in models]


@pytest.mark.slow
def test_a_native_call_over_the_window_is_refused_from_its_length(url):
    with httpx.Client(base_url=f"{url}/api/v1", timeout=60) as client:
        sid = client.post("/sessions", json={}).json()["session_id"]
        try:
            call = {
                "id": "c",
                "template": "Summarize: {{input:doc}} {{output:o}}",
                "inputs": {"doc": "doc"},
                "outputs": {"o": {"var": "o", "sampling": {"max_tokens": 4}}},
            }
            program = {"variables": [{"id": "doc", "value": "word " * 12_000}], "calls": [call]}
            resp = client.post(f"/sessions/{sid}/programs", json=program)
        finally:
            client.delete(f"/sessions/{sid}")
    assert resp.status_code == 400
    assert "call 'c'" in resp.text and "characters" in resp.text


@pytest.mark.slow
def test_429_and_503_say_when_to_retry(url):
    with httpx.Client(base_url=url, timeout=60) as client:
        first = client.post("/api/v1/sessions", json={})
        try:
            full = client.post("/api/v1/sessions", json={})  # --max-sessions 1
            assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1
        finally:
            client.delete(f"/api/v1/sessions/{first.json()['session_id']}")
        # One request runs, one waits (--max-running-requests 1, --max-queued-requests 1): a
        # third finds the queue full.
        body = {"prompt": "Count:", "max_tokens": 400, "stream": True, "ignore_eos": True}
        with client.stream("POST", "/v1/completions", json=body) as running:
            lines = running.iter_lines()  # kept: a dropped iterator closes the response
            assert next(lines).startswith("data: ")  # generating
            with client.stream("POST", "/v1/completions", json=body) as waiting:
                assert waiting.status_code == 200  # queued
                refused = client.post("/v1/completions", json=body | {"stream": False})
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["type"] == "overloaded_error"


async def test_the_engine_app_has_the_body_limit(make_engine):
    engine = AsyncEngine(make_engine)
    try:
        app = create_engine_app(engine, max_request_bytes=1000, request_body_timeout_seconds=5)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://engine") as client:
            big = await client.post("/generate", json={"text": "x" * 2000})
            assert big.status_code == 413 and big.json()["error"]["code"] == 413
            small = await client.post(
                "/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": 1}}
            )
            assert small.status_code == 200
    finally:
        await engine.shutdown()


def test_both_commands_take_the_body_limits():
    for command in ("serve", "engine"):
        out = subprocess.run(
            [sys.executable, "-m", "parrot_server.cli", command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        text = " ".join(out.stdout.split())
        assert "--max-request-bytes" in text and "PARROT_MAX_REQUEST_BYTES" in text
        assert "--request-body-timeout" in text and "PARROT_REQUEST_BODY_TIMEOUT" in text
