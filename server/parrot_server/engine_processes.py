"""`parrot serve --engines N`: N local `parrot engine` processes (each with its own model copy)
for a one-command cluster on one machine, supervised: a process that dies is started again on
the same port (with backoff), and the ServeCore's health checks re-register it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from .core.tenants import new_key

log = logging.getLogger(__name__)

RESTART_BACKOFF_MAX = 30.0  # seconds between restarts of an engine that keeps dying
_ACCESS_ENV = ("PARROT_API_KEY", "PARROT_ADMIN_KEY", "PARROT_PUBLIC_PATHS", "PARROT_TENANTS")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EngineProcess:
    """One supervised `parrot engine` child on a fixed port."""

    def __init__(
        self, index: int, host: str, port: int, engine_args: list[str], api_key: str
    ) -> None:
        self.index, self.host, self.port = index, host, port
        self.argv = [
            sys.executable, "-m", "parrot_server.cli", "engine",
            "--host", host, "--port", str(port), *engine_args,
        ]  # fmt: skip
        # The key in the environment, not argv (which any local user can read); no config
        # file or access setting of the front server's reaches the engine.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(_ACCESS_ENV)}
        self.env |= {"PARROT_API_KEY": api_key, "PARROT_CONFIG": ""}
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._backoff = 1.0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def spawn(self) -> None:
        # Its own process group, so a terminal's Ctrl-C reaches only the ServeCore, which then
        # stops its engines in order.
        self.proc = subprocess.Popen(self.argv, start_new_session=True, env=self.env)
        log.info("engine %d started: pid %d on %s", self.index, self.proc.pid, self.url)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, grace: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class EngineProcesses:
    def __init__(
        self,
        count: int,
        engine_args: list[str],
        host: str = "127.0.0.1",
        grace: float = 10.0,
        api_key: str | None = None,
    ) -> None:
        """`api_key`: what the engines require (a fresh random one by default: only this
        server talks to them)."""
        if count < 1:
            raise ValueError(f"--engines must be >= 1, got {count}")
        self.grace = grace
        self.api_key = api_key or new_key()
        self.procs = [
            EngineProcess(i, host, free_port(host), engine_args, self.api_key) for i in range(count)
        ]
        self._supervisor: asyncio.Task | None = None
        self._stopping = False

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.procs]

    def start(self) -> None:
        for p in self.procs:
            p.spawn()

    async def supervise(self, period: float = 1.0) -> None:
        """Restarts engines that exit, waiting longer each time one keeps failing."""
        next_try: dict[int, float] = {}
        while not self._stopping:
            await asyncio.sleep(period)
            for p in self.procs:
                code = p.exited()
                if code is None or self._stopping:
                    continue
                now = time.monotonic()
                if p.index not in next_try:
                    log.warning("engine %d (pid %d) exited with %s", p.index, p.proc.pid, code)
                    next_try[p.index] = now + p._backoff
                elif now >= next_try.pop(p.index):
                    p.restarts += 1
                    p._backoff = min(RESTART_BACKOFF_MAX, p._backoff * 2)
                    p.spawn()

    def start_supervisor(self) -> None:
        self._supervisor = asyncio.get_running_loop().create_task(self.supervise())

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await asyncio.gather(*(asyncio.to_thread(p.stop, self.grace) for p in self.procs))

    def pids(self) -> dict[str, int]:
        return {p.url: p.proc.pid for p in self.procs if p.proc is not None}


def engine_argv(args, count: int) -> list[str]:
    """The engine flags of `parrot serve` passed on to each `parrot engine` child. Unless
    `--threads` is given, the cores are split between the engines (oversubscribed torch
    threads make every engine slower)."""
    threads = args.threads or max(1, (os.cpu_count() or 1) // count)
    out: list[str] = []
    for flag, value in (
        ("--model", args.model),
        ("--dtype", args.dtype),
        ("--device", args.device),
        ("--kv-pool-tokens", args.kv_pool_tokens),
        ("--max-context-len", args.max_context_len),
        ("--max-step-tokens", args.max_step_tokens),
        ("--max-running-requests", args.max_running_requests),
        ("--max-queued-requests", args.max_queued_requests),
        ("--threads", threads),
        ("--log-level", args.log_level),
        ("--log-format", args.log_format),
    ):
        if value is not None:
            out += [flag, str(value)]
    return out
