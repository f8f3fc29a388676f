"""First run and operations: what `parrot serve` says as it starts (JSON log lines), a port in
use and a hub id refused before any model loads, progress lines of long first-run steps, and
`/metrics` after real requests (token counters, HTTP statuses, inter-token latency)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from parrot_kernels import extension
from parrot_server.engine import progress

CLI = [sys.executable, "-m", "parrot_server.cli"]
KEY = "sk-ops"
AUTH = {"Authorization": f"Bearer {KEY}"}


# -- refused before the model loads -------------------------------------------------------------


def test_port_in_use_fails_at_once_before_loading_the_model():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for command in ("serve", "engine"):
            start = time.monotonic()
            out = subprocess.run(
                [*CLI, command, "--port", str(port)], capture_output=True, text=True, timeout=60
            )
            took = time.monotonic() - start
            assert out.returncode != 0
            assert f"cannot listen on http://127.0.0.1:{port}" in out.stderr
            assert "another process holds it" in out.stderr and "Traceback" not in out.stderr
            assert "loaded in" not in out.stderr + out.stdout  # no model was loaded
            assert took < 15, f"`parrot {command}` took {took:.1f} s to refuse a taken port"


def test_connections_on_the_listening_socket_are_accepted_with_nagle_off():
    """What uvicorn does with the socket `parrot serve` listens on (asyncio accepts on it), and
    the option each accepted connection then has: with Nagle's algorithm on, a response written
    in two parts waits for the client's delayed ACK on a kept-alive connection (~40 ms)."""
    import argparse
    import asyncio

    from parrot_server.startup import listen

    sock = listen(argparse.Namespace(host="127.0.0.1", port=0))
    assert sock is not None

    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connection, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            try:
                return await asyncio.wait_for(seen, 10)
            finally:
                writer.close()

    assert asyncio.run(accepted_nodelay()) != 0


def test_a_hub_id_is_answered_with_what_to_pass_instead():
    hub_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for command in ("serve", "engine"):
        start = time.monotonic()
        out = subprocess.run(
            [*CLI, command, "--model", hub_id, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert time.monotonic() - start < 15  # refused before the engine is imported
        assert out.returncode != 0 and "Traceback" not in out.stderr
        text = " ".join(out.stderr.split())
        assert "never downloads" in text and hub_id in text
        assert f"huggingface-cli download {hub_id} --local-dir DIR" in text


# -- progress of long first-run steps -------------------------------------------------------------


def test_progress_logs_lines_when_stderr_is_not_a_terminal(caplog, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)
    log = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"):
        assert list(progress.progress([1, 2, 3], "dequantising x.gguf", "tensor", log)) == [1, 2, 3]
    lines = [r.getMessage() for r in caplog.records]
    assert any("dequantising x.gguf: 2/3 tensors" in line for line in lines)
    assert "dequantising x.gguf: 3 tensors in" in lines[-1]


def test_a_long_build_says_it_is_still_building(caplog, monkeypatch):
    monkeypatch.setattr(extension, "HEARTBEAT_SECONDS", 0.05)
    with caplog.at_level(logging.INFO, logger=extension.log.name):
        with extension._Heartbeat("still building the X extension"):
            time.sleep(0.3)
        time.sleep(0.2)  # stopped: no more lines
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 2 and all(line.startswith("still building the X ext") for line in lines)
    assert lines[-1].endswith("s so far)")


# -- a started server: its log and its /metrics ---------------------------------------------------


@pytest.fixture(scope="module")
def ops_server(parrot_process):
    flags = ["--kv-pool-tokens", "4096", "--max-context-len", "2048", "--log-format", "json"]
    return parrot_process(["serve", *flags, "--api-key", KEY], "ops").wait_healthy()


def _startup_lines(server) -> list[dict]:
    lines = [json.loads(x) for x in server.log.read_text().splitlines() if x.startswith("{")]
    return [x for x in lines if x["logger"] == "parrot_server.startup"]


def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    text = httpx.get(f"{url}/metrics", headers=AUTH, timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _sum(samples: dict, name: str, **labels: str) -> float:
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )


@pytest.mark.slow
def test_startup_log_names_model_window_pool_and_url(ops_server):
    lines = _startup_lines(ops_server)
    by_field = {k: x for x in lines for k in x}
    assert by_field["url"]["url"] == ops_server.url
    assert by_field["model_path"]["model_path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert by_field["model_path"]["quantised_blocks"] in (True, False)
    assert by_field["load_seconds"]["load_seconds"] > 0
    pool = by_field["kv_pool_tokens"]
    assert (pool["kv_pool_tokens"], pool["max_context_len"]) == (4096, 2048)
    assert pool["kv_pool_bytes"] > 0 and pool["kv_dtype"]
    messages = [x["message"] for x in lines]
    assert any(m.startswith("listening on http://127.0.0.1:") for m in messages)
    assert any("context window 2048 tokens; KV pool 4096 tokens" in m for m in messages)
    assert messages[-1] == f"ready: serving on {ops_server.url}"


@pytest.mark.slow
def test_metrics_count_tokens_statuses_and_inter_token_latency(ops_server):
    url = ops_server.url
    before = _metrics(url)
    served = httpx.get(f"{url}/v1/models", headers=AUTH).json()["data"][0]["id"]
    body = {"model": served, "prompt": "Hello there", "max_tokens": 5, "ignore_eos": True}
    plain = httpx.post(f"{url}/v1/completions", json=body, headers=AUTH, timeout=60).json()
    streamed = dict(body, stream=True, stream_options={"include_usage": True})
    usage = None
    with httpx.stream(
        "POST", f"{url}/v1/completions", json=streamed, headers=AUTH, timeout=60
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage") or usage
    assert usage is not None and usage["completion_tokens"] == 5
    assert httpx.post(f"{url}/v1/completions", json=body).status_code == 401  # no key
    assert httpx.get(f"{url}/v1/models/no-such-model", headers=AUTH).status_code == 404
    assert httpx.get(f"{url}/no/such/route", headers=AUTH).status_code == 404
    after = _metrics(url)

    def gained(name: str, **labels: str) -> float:
        return _sum(after, name, **labels) - _sum(before, name, **labels)

    answers = (plain["usage"], usage)
    assert gained("parrot_prompt_tokens_total", model_name=served) == sum(
        u["prompt_tokens"] for u in answers
    )
    assert gained("parrot_generated_tokens_total", model_name=served) == 10
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in answers)
    assert gained("parrot_cached_prompt_tokens_total", model_name=served) == cached
    # Five streamed tokens: four gaps between them (the plain request's count too).
    assert gained("parrot_inter_token_latency_seconds_count", model_name=served) == 8
    assert gained("parrot_queue_wait_seconds_count", model_name=served) == 2
    assert gained("parrot_time_to_first_token_seconds_count", model_name=served) == 2
    http = "parrot_http_requests_total"
    assert gained(http, method="POST", route="/v1/completions", status="200") == 2
    assert gained(http, method="POST", route="/v1/completions", status="401") == 1
    assert gained(http, method="GET", route="/v1/models/{model}", status="404") == 1
    assert gained(http, method="GET", route="unmatched", status="404") == 1
    families = {
        f.name: f.type
        for f in text_string_to_metric_families(httpx.get(f"{url}/metrics", headers=AUTH).text)
    }
    assert families["parrot_generated_tokens"] == "counter"
    assert families["parrot_inter_token_latency_seconds"] == "histogram"
