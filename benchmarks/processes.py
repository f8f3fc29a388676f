"""The servers a benchmark starts: `parrot serve` (and llama.cpp's `llama-server`, through
`llama_server.py`), each on a free loopback port, logging to a file, waited for until it
answers, stopped when the benchmark ends."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    log: Path

    def stop(self, grace: float = 60) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
    with open(log, "w") as out:  # the process keeps its own descriptor
        proc = subprocess.Popen(command(port), stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{name} exited with {proc.returncode}; log: {log}")
        try:
            if ready(httpx.get(server.url + path, timeout=2)):
                return server
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    server.stop(grace=5)
    sys.exit(f"{name} not ready within {timeout:g} s; log: {log}")


def parrot_serve(*flags: str, engines: int = 1, timeout: float = 300) -> Server:
    """`parrot serve` with `flags`, ready once `engines` engines are healthy."""

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "parrot_server.cli", "serve", "--port", str(port), *flags]

    def ready(r: httpx.Response) -> bool:
        return r.status_code == 200 and sum(e["healthy"] for e in r.json()["engines"]) >= engines

    return start("parrot-serve", command, ready, timeout=timeout)
