"""Shared fixtures. Heavy objects (the real model) load once per session."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
from model_helpers import small_engine

from parrot_kernels import cpu_ops, cpu_shared_prefix
from parrot_server.engine.engine import Engine
from parrot_server.engine.model import LoadedModel, load_model
from parrot_server.spawn import ServerProcess, spawn_parrot

# Fixtures that load the model or start a server. A test using one, directly or through
# another fixture, is marked `needs_server` and `slow` here, so that `-m "not slow"` neither
# loads the model nor starts a server and no test can be left out of that by a missing mark.
SERVER_FIXTURES = frozenset({"loaded_model", "dense_model", "server_url", "parrot_process"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_server)
            item.add_marker(pytest.mark.slow)


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
    its quantised weights kept as GGUF blocks, from the user's cache. Its prefill GEMMs run in
    fp32 whatever this CPU's faster type, so that tests may compare texts computed in steps of
    different shapes (a cached prefix, a preemption, drafts) token for token; the bf16 GEMM has
    its own tests (test_compact_weights, test_quant_matmul)."""
    return load_model(gemm_dtype=torch.float32)


@pytest.fixture(scope="session")
def make_engine(loaded_model) -> Callable[..., Engine]:
    """A test-sized engine on the default model; keyword arguments are EngineConfig fields."""
    return functools.partial(small_engine, loaded_model)


@pytest.fixture(scope="session")
def dense_model() -> LoadedModel:
    """The default model with every weight expanded to fp32 (`--dtype float32`)."""
    return load_model(dtype=torch.float32)


@pytest.fixture(scope="session")
def parrot_process(tmp_path_factory):
    """Factory: `parrot_process(["engine", *flags], "name")` spawns the CLI (not yet waited
    for: call `.wait_healthy()`), logging to a temp file; every process is stopped at the end."""
    started: list[ServerProcess] = []

    def spawn(args: list[str], name: str, stdin: int | None = None) -> ServerProcess:
        log = tmp_path_factory.mktemp(name) / f"{name}.log"
        started.append(spawn_parrot(args, log, stdin=stdin))
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
    server = spawn_parrot(["serve", *flags], server_log).wait_healthy()
    yield server.url
    server.stop()
