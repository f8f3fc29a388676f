"""Shared fixtures. Heavy objects (the real model) load once per session."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from parrot_server.engine.model import LoadedModel, load_model


@pytest.fixture(scope="session")
def loaded_model() -> LoadedModel:
    """The default model (SmolLM2-135M-Instruct GGUF, fp32 on CPU), from the user's cache."""
    return load_model()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server_log(tmp_path_factory):
    """Where the test server writes its output (a file: an unread pipe would fill and block it)."""
    return tmp_path_factory.mktemp("server") / "parrot-serve.log"


@pytest.fixture(scope="session")
def server_url(server_log):
    """`parrot serve` in a subprocess on 127.0.0.1 (the real CLI, uvicorn and model), once per run."""
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "parrot_server.cli",
        "serve",
        "--port",
        str(port),
        "--kv-pool-tokens",
        "16384",
        "--max-context-len",
        "2048",
        "--log-level",
        "warning",
    ]
    with open(server_log, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"parrot serve exited with {proc.returncode}:\n{server_log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("parrot serve did not become healthy within 180 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
