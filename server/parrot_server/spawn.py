"""Start a server process and wait until it answers: `parrot serve` / `parrot engine` for the
tests and benchmarks, or any other HTTP server a benchmark compares against.

The process logs to a file (an unread pipe would fill and block it) and listens on 127.0.0.1;
`wait_healthy` polls it and raises `ServerNotReady` (with the log) when the process exits first
or does not answer in time. No pytest here: benchmarks use it as well as the test fixtures.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

HOST = "127.0.0.1"


class ServerNotReady(RuntimeError):
    """The process exited, or did not answer its health check in time; the message holds the
    end of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _answers_200(response: httpx.Response) -> bool:
    return response.status_code == 200


class ServerProcess:
    """A server subprocess: `proc`, its `url`, the `log` file it writes to."""

    def __init__(self, name: str, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.name, self.proc, self.url, self.log = name, proc, url, log

    @classmethod
    def start(
        cls,
        name: str,
        command: list[str],
        url: str,
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        stdin: int | None = None,
    ) -> ServerProcess:
        """Run `command` (which makes it listen at `url`), logging to `log`. `stdin`: a file
        descriptor for its standard input (default: this process's)."""
        with open(log, "w") as out:  # the process keeps its own descriptor
            proc = subprocess.Popen(
                command,
                stdin=stdin,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
            )
        return cls(name, proc, url, log)

    def wait_healthy(
        self,
        timeout: float = 180,
        *,
        path: str = "/health",
        ready: Callable[[httpx.Response], bool] = _answers_200,
    ) -> ServerProcess:
        """Return once GET `path` gives a response `ready` accepts (default: a 200). Raises
        `ServerNotReady` if the process exits first or is not ready within `timeout` seconds
        (then it is killed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerNotReady(
                    f"{self.name} exited with {self.proc.returncode}; log {self.log}:\n"
                    f"{self._log_tail()}"
                )
            try:
                if ready(httpx.get(self.url + path, timeout=2)):
                    return self
            except (httpx.HTTPError, ValueError, LookupError):  # not up, or not ready yet
                pass
            time.sleep(0.25)
        self.stop(grace=5)
        raise ServerNotReady(
            f"{self.name} not ready within {timeout:g} s; log {self.log}:\n{self._log_tail()}"
        )

    def _log_tail(self, chars: int = 20_000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"(unreadable: {exc})"

    def stop(self, grace: float = 30) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parrot_command(*args: str) -> list[str]:
    """The `parrot` CLI as this interpreter runs it: `parrot_command("serve", "--port", "8000")`."""
    return [sys.executable, "-m", "parrot_server.cli", *args]


def spawn_parrot(
    args: list[str],
    log: Path,
    *,
    port: int | None = None,
    stdin: int | None = None,
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """`parrot <args> --port PORT` (a free port unless given), not yet waited for: call
    `.wait_healthy()`."""
    port = port or free_port()
    command = parrot_command(*args, "--port", str(port))
    name = f"parrot {args[0]}" if args else "parrot"
    return ServerProcess.start(name, command, f"http://{HOST}:{port}", log, env=env, stdin=stdin)


__all__ = [
    "ServerNotReady",
    "ServerProcess",
    "free_port",
    "parrot_command",
    "spawn_parrot",
]
