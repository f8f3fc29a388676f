"""Stopping `parrot serve` (SIGTERM): what still runs when the grace period ends is ended by the
server with a typed error its readers receive: a JSON 503 for a waiting native GET, an error
event and `[DONE]` for a `/v1` stream. Nobody gets a bare 500 or a cut stream."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

pytestmark = pytest.mark.slow


def test_readers_are_told_the_server_is_shutting_down(parrot_process):
    flags = ["--graceful-shutdown", "3", "--kv-pool-tokens", "4096", "--max-context-len", "2048",
             "--log-level", "warning"]  # fmt: skip
    server = parrot_process(["serve", *flags], "shutdown").wait_healthy()
    url = server.url
    sid = httpx.post(f"{url}/api/v1/sessions", json={}).json()["session_id"]
    var = f"{url}/api/v1/sessions/{sid}/variables"
    assert httpx.post(var, json={"id": "never"}).status_code == 201  # nobody will set it
    results: dict[str, object] = {}

    def wait_for_value() -> None:
        results["get"] = httpx.get(f"{var}/never", params={"timeout": 120}, timeout=60)

    reader = threading.Thread(target=wait_for_value)
    reader.start()
    body = {"prompt": "Tell a long story.", "max_tokens": 1500, "ignore_eos": True,
            "stream": True}  # fmt: skip
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as stream:
        lines = stream.iter_lines()
        assert next(e for e in lines if e.startswith("data: {"))
        server.proc.terminate()
        events = [e for e in lines if e.startswith("data: ")]
    reader.join(60)
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert error["code"] == 503 and "shutting down" in error["message"]
    got = results["get"]
    assert isinstance(got, httpx.Response) and got.status_code == 503, got
    assert got.headers["content-type"] == "application/json"
    assert "shutting down" in got.json()["error"]["message"]
    assert server.proc.wait(30) in (0, -15)
    assert "Traceback" not in server.log.read_text()
