"""The servers a benchmark starts: `parrot serve` (and llama.cpp's `llama-server`, through
`llama_server.py`), each on a free loopback port, logging to a file, waited for until it
answers (`parrot_server.spawn`, as the tests do), stopped when the benchmark ends."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx

from parrot_server.spawn import HOST, ServerNotReady, ServerProcess, free_port, parrot_command

Server = ServerProcess


def start(
    name: str,
    command: Callable[[int], list[str]],
    ready: Callable[[httpx.Response], bool],
    path: str = "/health",
    timeout: float = 300,
    port: int | None = None,
) -> Server:
    """Runs `command(port)` (a free port unless given); returns once GET `path` gives a
    response `ready` accepts. Exits the benchmark, naming the log, if the process dies or is
    not ready within `timeout`."""
    port = port or free_port()
    log = Path(tempfile.gettempdir()) / f"bench-{name}-{port}.log"
    server = ServerProcess.start(name, command(port), f"http://{HOST}:{port}", log)
    try:
        return server.wait_healthy(timeout, path=path, ready=ready)
    except ServerNotReady as exc:
        sys.exit(str(exc))


def parrot_serve(*flags: str, engines: int = 1, timeout: float = 300) -> Server:
    """`parrot serve` with `flags`, ready once `engines` engines are healthy and the embedding
    model (if any) has loaded: its load in the background would slow the first runs."""

    def command(port: int) -> list[str]:
        return parrot_command("serve", "--port", str(port), *flags)

    def ready(r: httpx.Response) -> bool:
        if r.status_code != 200:
            return False
        body = r.json()
        loading = body.get("embeddings", {}).get("state") == "loading"
        return sum(e["healthy"] for e in body["engines"]) >= engines and not loading

    return start("parrot-serve", command, ready, timeout=timeout)
