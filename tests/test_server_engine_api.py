"""`parrot serve` on 127.0.0.1 (real uvicorn, real model): SGLang-native /generate and friends."""

from __future__ import annotations

import json
import os

import httpx
import pytest

pytestmark = pytest.mark.slow


def test_health_and_info(server_url):
    assert httpx.get(f"{server_url}/health").status_code == 200
    info = httpx.get(f"{server_url}/model_info").json()
    assert info["is_generation"] is True and info["max_context_len"] > 0
    state = httpx.get(f"{server_url}/server_info").json()
    assert state["max_total_num_tokens"] > 0 and "internal_states" in state
    # The default: on CPU the GGUF's blocks stay compact (float32 where the kernel cannot build).
    assert (state["dtype"], state["device"]) == ("auto", "cpu")
    assert state["weights"].startswith("GGUF blocks") or state["weights"] == "float32"


def test_generate_text_and_ids(server_url):
    body = {
        "text": "The capital of France is",
        "sampling_params": {"max_new_tokens": 8, "temperature": 0},
    }
    r = httpx.post(f"{server_url}/generate", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["text"] and len(out["output_ids"]) == out["meta_info"]["completion_tokens"] <= 8
    assert out["meta_info"]["finish_reason"]["type"] in ("stop", "length")
    again = httpx.post(f"{server_url}/generate", json=body, timeout=60).json()
    assert again["output_ids"] == out["output_ids"]
    assert again["meta_info"]["cached_tokens"] >= out["meta_info"]["prompt_tokens"] - 1
    ids = {
        "input_ids": [1, 504, 3575, 282],
        "sampling_params": {"max_new_tokens": 3, "temperature": 0},
    }
    assert len(httpx.post(f"{server_url}/generate", json=ids, timeout=60).json()["output_ids"]) <= 3


def test_generate_stream_is_sse(server_url):
    body = {
        "text": "Once upon a time",
        "stream": True,
        "sampling_params": {"max_new_tokens": 6, "temperature": 0, "ignore_eos": True},
    }
    chunks = []
    with httpx.stream("POST", f"{server_url}/generate", json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunks.append(line[len("data: ") :])
    assert chunks[-1] == "[DONE]"
    parsed = [json.loads(c) for c in chunks[:-1]]
    assert len(parsed) == 6
    assert [len(p["output_ids"]) for p in parsed] == [1, 2, 3, 4, 5, 6]  # cumulative, as SGLang
    assert parsed[-1]["meta_info"]["finish_reason"] == {"type": "length", "length": 6}


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"sampling_params": {"max_new_tokens": 4}}, "exactly one of"),
        ({"text": "hi", "sampling_params": {"max_new_tokens": 0}}, "max_new_tokens"),
        ({"text": "hi", "sampling_params": {"temperature": -1}}, "temperature"),
        ({"text": "hi", "sampling_params": {"top_p": 0}}, "top_p"),
        ({"text": "hi", "sampling_params": {"max_new_tokens": "many"}}, "max_new_tokens"),
        ({"input_ids": [], "sampling_params": {"max_new_tokens": 4}}, "empty"),
        ({"text": "word " * 9000, "sampling_params": {"max_new_tokens": 4}}, "context window"),
        ({"text": "hi", "sampling_params": {"sampling_seed": 2**64}}, "sampling_seed"),
    ],
)
def test_bad_requests_get_400_with_a_message(server_url, server_log, body, needle):
    r = httpx.post(f"{server_url}/generate", json=body, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["code"] == 400
    assert "Traceback" not in server_log.read_text()  # a client's mistake is not a server error


def test_abort_unknown_rid_and_flush(server_url):
    assert httpx.post(f"{server_url}/abort_request", json={"rid": "nope"}).json() == {"aborted": []}
    r = httpx.post(f"{server_url}/flush_cache")
    assert r.status_code == 200 and "flushed" in r.text


def test_cli_rejects_an_unknown_dtype_cleanly():
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "parrot_server.cli", "engine", "--dtype", "int3"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--dtype" in r.stderr and "float32" in r.stderr and "Traceback" not in r.stderr
    env = {**os.environ, "PARROT_DTYPE": "int3"}  # the same from the environment
    r = subprocess.run(cmd[:-2], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2
    assert "PARROT_DTYPE" in r.stderr and "float32" in r.stderr and "Traceback" not in r.stderr


def test_cli_rejects_a_missing_model_cleanly(tmp_path):
    import subprocess
    import sys

    missing = tmp_path / "nope.gguf"
    cmd = [sys.executable, "-m", "parrot_server.cli", "serve", "--model", str(missing)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert str(missing) in r.stderr and "Traceback" not in r.stderr
