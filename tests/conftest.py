"""Shared fixtures. Heavy objects (the real model) load once per session."""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from model_helpers import small_engine

from parrot_kernels import cpu_ops, cpu_shared_prefix
from parrot_server.engine.engine import Engine
from parrot_server.engine.model import LoadedModel, load_model


@pytest.fixture(scope="session", autouse=True)
def compiled_extensions() -> None:
    """Build the C++ extensions first (minutes on a 2-core machine with an empty cache), so that no
    server a test starts pays for the build inside its start-up deadline: they load the cached
    builds. Where a build fails, tests take the torch paths as the engine does."""
    cpu_ops.load()
    cpu_shared_prefix.load()


@pytest.fixture(scope="session")
def loaded_model() -> LoadedModel:
    """The default model (SmolLM2-135M-Instruct GGUF) as the engine loads it by default: on CPU
    its quantised weights kept as GGUF blocks, from the user's cache."""
    return load_model()


@pytest.fixture(scope="session")
def make_engine(loaded_model) -> Callable[..., Engine]:
    """A test-sized engine on the default model; keyword arguments are EngineConfig fields."""
    return functools.partial(small_engine, loaded_model)


@pytest.fixture(scope="session")
def dense_model() -> LoadedModel:
    """The default model with every weight expanded to fp32 (`--dtype float32`)."""
    return load_model(dtype=torch.float32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ParrotProcess:
    """A `parrot serve` / `parrot engine` subprocess on 127.0.0.1 and the file it logs to (a
    file: an unread pipe would fill and block it)."""

    args: list[str]
    proc: subprocess.Popen
    url: str
    log: Path

    @classmethod
    def spawn(cls, args: list[str], log: Path, stdin: int | None = None) -> ParrotProcess:
        """Start the real CLI: `args` is the command and its flags; a free port is added.
        `stdin`: a file descriptor for its standard input (default: this process's)."""
        port = _free_port()
        cmd = [sys.executable, "-m", "parrot_server.cli", *args, "--port", str(port)]
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, stdin=stdin, stdout=f, stderr=subprocess.STDOUT, text=True)
        return cls(args, proc, f"http://127.0.0.1:{port}", log)

    def wait_healthy(self, timeout: float = 180) -> ParrotProcess:
        """Return once /health answers 200; fail the test if the process exits first or stays
        unhealthy for `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"parrot {self.args[0]} exited with {self.proc.returncode}:\n"
                    f"{self.log.read_text()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.proc.kill()
        pytest.fail(f"parrot {self.args[0]} did not become healthy within {timeout:g} s")

    def stop(self, grace: float = 30) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def parrot_process(tmp_path_factory):
    """Factory: `parrot_process(["engine", *flags], "name")` spawns the CLI (not yet waited
    for: call `.wait_healthy()`), logging to a temp file; every process is stopped at the end."""
    started: list[ParrotProcess] = []

    def spawn(args: list[str], name: str, stdin: int | None = None) -> ParrotProcess:
        log = tmp_path_factory.mktemp(name) / f"{name}.log"
        started.append(ParrotProcess.spawn(args, log, stdin))
        return started[-1]

    yield spawn
    for p in started:
        p.stop()


@pytest.fixture(scope="session")
def server_log(tmp_path_factory):
    """Where the test server writes its output."""
    return tmp_path_factory.mktemp("server") / "parrot-serve.log"


@pytest.fixture(scope="session")
def server_url(server_log):
    """`parrot serve` in a subprocess on 127.0.0.1 (the real CLI, uvicorn and model), once per run."""
    flags = ["--kv-pool-tokens", "16384", "--max-context-len", "2048", "--log-level", "warning"]
    server = ParrotProcess.spawn(["serve", *flags], server_log).wait_healthy()
    yield server.url
    server.stop()
