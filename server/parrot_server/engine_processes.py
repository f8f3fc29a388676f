"""`parrot serve --engines N`: N local `parrot engine` processes (each with its own model copy)
for a one-command cluster on one machine, supervised: a process that dies is started again on
the same port (with backoff), and the ServeCore's health checks re-register it.

The children die with the server however it ends, SIGKILL included: each gets a pipe as stdin
whose other end only the server holds (EOF: the server is gone), and on Linux the parent-death
signal too (`die_with_parent`, opted into by the internal `--parent-pid` flag)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator

from .core.tenants import new_key

log = logging.getLogger(__name__)

RESTART_BACKOFF_MIN = 1.0  # seconds before restarting an engine that exited
RESTART_BACKOFF_MAX = 30.0  # seconds between restarts of an engine that keeps dying
STABLE_AFTER = 60.0  # seconds up after which an engine's next exit counts as a first one
ORPHAN_GRACE = 5.0  # seconds an orphaned engine gets to stop gracefully before it exits hard
_ACCESS_ENV = ("PARROT_API_KEY", "PARROT_ADMIN_KEY", "PARROT_PUBLIC_PATHS", "PARROT_TENANTS")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EngineProcess:
    """One supervised `parrot engine` child on a fixed port, and its supervision state."""

    def __init__(
        self, index: int, host: str, port: int, engine_args: list[str], api_key: str
    ) -> None:
        self.index, self.host, self.port = index, host, port
        self.argv = [
            sys.executable, "-m", "parrot_server.cli", "engine",
            "--host", host, "--port", str(port), *engine_args,
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        # The key in the environment, not argv (which any local user can read); no config
        # file or access setting of the front server's reaches the engine.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(_ACCESS_ENV)}
        self.env |= {"PARROT_API_KEY": api_key, "PARROT_CONFIG": ""}
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.backoff = RESTART_BACKOFF_MIN  # the wait before the next restart
        self.started_at = 0.0  # time.monotonic() of the last spawn
        self.restart_at: float | None = None  # set while it is down, waiting to be restarted
        self._lifeline: int | None = None  # write end of the child's stdin, never written

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def spawn(self) -> None:
        # Its own process group, so a terminal's Ctrl-C reaches only the ServeCore, which then
        # stops its engines in order. Called on the event loop's thread, which lives as long as
        # the server: the child's parent-death signal fires when the forking thread ends.
        self._close_lifeline()
        read_end, self._lifeline = os.pipe()
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=read_end, start_new_session=True, env=self.env
            )
        finally:
            os.close(read_end)
        self.started_at = time.monotonic()
        log.info("engine %d started: pid %d on %s", self.index, self.proc.pid, self.url)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def tend(self, now: float) -> None:
        """One supervision step: notice an exit and schedule the restart, or restart when due."""
        code = self.exited()
        if code is None:
            return
        if self.restart_at is None:
            if now - self.started_at >= STABLE_AFTER:
                self.backoff = RESTART_BACKOFF_MIN
            self.restart_at = now + self.backoff
            log.warning(
                "engine %d (pid %d) exited with %s after %.0f s; restarting in %g s",
                self.index, self.proc.pid, code, now - self.started_at, self.backoff,
            )  # fmt: skip
            self.backoff = min(RESTART_BACKOFF_MAX, self.backoff * 2)
            return
        if now < self.restart_at:
            return
        self.restart_at = None
        try:
            self.spawn()
        except OSError as exc:  # no fork, no fds: tried again after the next backoff
            log.error("engine %d could not be restarted: %s", self.index, exc)
            self.started_at = now
            return
        self.restarts += 1
        log.warning(
            "engine %d restarted (restart %d): pid %d", self.index, self.restarts, self.proc.pid
        )

    def stop(self, grace: float) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_lifeline()

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

    def status(self) -> dict[str, int | None]:
        """What `/health` adds to this engine's entry."""
        running = self.proc is not None and self.proc.poll() is None
        return {"pid": self.proc.pid if running else None, "restarts": self.restarts}


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

    async def supervise(self, period: float = 0.5) -> None:
        """Restarts engines that exit, waiting longer each time one keeps failing."""
        while not self._stopping:
            await asyncio.sleep(period)
            for p in self.procs:
                if not self._stopping:
                    p.tend(time.monotonic())

    def start_supervisor(self) -> None:
        self._supervisor = asyncio.get_running_loop().create_task(self.supervise())

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await asyncio.gather(*(asyncio.to_thread(p.stop, self.grace) for p in self.procs))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Started and supervised inside, stopped on the way out."""
        self.start()
        self.start_supervisor()
        try:
            yield
        finally:
            await self.stop()

    def status(self) -> dict[str, dict[str, int | None]]:
        """Per engine URL: its pid (None while down) and how often it was restarted."""
        return {p.url: p.status() for p in self.procs}


def die_with_parent(parent_pid: int, grace: float = ORPHAN_GRACE) -> None:
    """In a `parrot engine` started by `EngineProcess`: when the server is gone, stop (SIGTERM to
    itself, so the graceful path runs; a hard exit if that takes longer than `grace`)."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("PR_SET_PDEATHSIG failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent_pid:  # it died before the signal was armed
        raise SystemExit(f"parrot engine: parent process {parent_pid} is gone")

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(0, 4096):  # the server never writes: only EOF ends this
                pass
        log.warning("parent process %d is gone: stopping", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def engine_argv(args, count: int) -> list[str]:
    """The engine flags of `parrot serve` passed on to each `parrot engine` child. Unless
    `--threads` is given, the cores are split between the engines (oversubscribed torch
    threads make every engine slower)."""
    threads = args.threads or max(1, (os.cpu_count() or 1) // count)
    out: list[str] = []
    for flag, value in (
        ("--model", args.model),
        ("--dtype", args.dtype),
        ("--gemm-dtype", args.gemm_dtype),
        ("--dense-weights-mb", args.dense_weights_mb),
        ("--device", args.device),
        ("--kv-pool-tokens", args.kv_pool_tokens),
        ("--max-context-len", args.max_context_len),
        ("--max-step-tokens", args.max_step_tokens),
        ("--background-pause-steps", args.background_pause_steps),
        ("--background-slice-layers", args.background_slice_layers),
        ("--background-step-tokens", args.background_step_tokens),
        ("--speculative-tokens", args.speculative_tokens),
        ("--speculative-max-batch", args.speculative_max_batch),
        ("--max-running-requests", args.max_running_requests),
        ("--max-queued-requests", args.max_queued_requests),
        ("--threads", threads),
        ("--log-level", args.log_level),
        ("--log-format", args.log_format),
    ):
        if value is not None:
            out += [flag, str(value)]
    return out
